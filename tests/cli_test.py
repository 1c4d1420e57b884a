"""The error policy of the binaries (sparsejax.cli): a UserError is one line and exit code 1, any
other exception keeps its traceback, and bad config files are named with the line that failed."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_main(body: str):
  """A binary whose main() runs ``body``."""
  script = textwrap.dedent("""
      from sparsejax import cli
      from sparsejax.utils.errors import ConfigError
      def main():
        {body}
      cli.run(main)
  """).format(body=body)
  return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=300, cwd=ROOT)


def test_a_user_error_is_one_line_and_exit_1():
  res = run_main("raise ConfigError('train.steps: must be >= 1, got 0')")
  assert (res.returncode, res.stderr) == (1, "error: train.steps: must be >= 1, got 0\n")


@pytest.mark.parametrize("exc", ["KeyError('params')", "ValueError('shapes differ')",
                                 "RuntimeError('boom')", "OSError(5, 'I/O error')"])
def test_any_other_exception_is_a_bug_and_keeps_its_traceback(exc):
  """cli.run used to turn every KeyError / ValueError / OSError / RuntimeError into one line."""
  res = run_main(f"raise {exc}")
  assert res.returncode == 1
  assert "Traceback (most recent call last)" in res.stderr
  assert f"{exc.split('(')[0]}: " in res.stderr.strip().splitlines()[-1]
  assert "error: " not in res.stderr


def run_train(tmp_path, config):
  workdir = tmp_path / "run"
  res = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"),
                        f"--config={config}", f"--workdir={workdir}"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert not workdir.exists()
  assert res.returncode == 1
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1, res.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n", "{path} line 1: invalid syntax"),
    ("def get_config():\n  return undefined_name\n",
     "{path} line 2: NameError: name 'undefined_name' is not defined"),
    ("def get_config():\n  return None\n", "--config={path}: get_config() returned None, "
     "expected a ConfigDict"),
    ("def get_config():\n  return [1]\n", "--config={path}: get_config() returned list, "
     "expected a ConfigDict"),
])
def test_a_broken_config_file_is_named_with_its_line(tmp_path, source, message):
  """These used to leak tracebacks (or a traceback flattened into one line)."""
  path = tmp_path / "my_config.py"
  path.write_text(source)
  assert run_train(tmp_path, path) == "error: " + message.format(path=path)


@pytest.mark.parametrize("config, message", [
    ("experiments/configs/csp.py:9x", "csp.py: expansion factor must be 1, 2, 4, 8 or 16, got 9"),
    ("experiments/configs/csp.py:4x,pfarc=1", "csp.py: unknown variant key 'pfarc'"),
    ("experiments/configs/csp.py:2x,pfrac=big", "csp.py: variant pfrac='big' is not a number"),
    ("{tmp}/missing.py", "--config={tmp}/missing.py: cannot load the config file (No such file "
     "or directory)"),
])
def test_a_config_variant_or_path_that_does_not_exist_is_one_line(tmp_path, config, message):
  line = run_train(tmp_path, config.format(tmp=tmp_path))
  assert line.startswith("error: " + message.format(tmp=tmp_path)), line
