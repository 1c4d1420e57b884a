import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsejax.train.metrics import read_metrics
from sparsejax.train.run_config import RunConfig
from sparsejax.train.loop import train
from sparsejax.utils.errors import ConfigError, FileFormatError

ROOT = Path(__file__).resolve().parents[1]


def small_run_config(**train_overrides) -> RunConfig:
  loop = dict(steps=6, batch_size=4, seq_len=32, log_every=2, eval_every=3, eval_batches=1)
  loop.update(train_overrides)
  return RunConfig.from_dict({
      "model": dict(block_size=32, vocab_size=257, n_layer=1, n_head=2, d_head=8, d_model=16,
                    d_mlp=32, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                    learnable_bigram_table=True, grad_checkpointing=False, nope=True),
      "sparsity": dict(target_density=0.25, embed_density_factor=2.0),
      "data": dict(train_tokens=20_000, eval_tokens=2_000, tokenizer="bytes"),
      "train": loop,
  })


def test_train_writes_metrics_and_config(tmp_path):
  lines = []
  last = train(small_run_config(), str(tmp_path), progress=lines.append)
  rows = read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [2, 3, 4, 6]
  for r in rows:
    for key in ("loss", "lr", "l0_fraction", "tokens_per_sec", "grad_rms", "density"):
      assert key in r, key
  assert [r["step"] for r in rows if "eval_loss" in r] == [3, 6]
  assert last["eval_loss"] == rows[-1]["eval_loss"]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["steps"] == 6 and saved["model"]["d_model"] == 16
  assert any(line.startswith("step 6/6") and "ETA" in line and "tok/s" in line for line in lines)


@pytest.mark.parametrize("section, overrides, message", [
    ("train", dict(stepz=3), "train.stepz: unknown key"),
    ("train", dict(steps="3"), "train.steps: expected int"),
    ("optim", dict(lr=-1.0), "optim.lr: must be > 0"),
    ("sparsity", dict(target_density=2.0), "sparsity.target_density: must be in"),
    ("model", dict(afrac=3.0), "model.afrac: must be in"),
    ("data", dict(tokenizer="web"), "data.tokenizer: must be one of"),
    ("data", dict(files_weight=1.0), "data.files: files_weight > 0 needs"),
])
def test_run_config_errors_name_the_field(section, overrides, message):
  base = {"model": dict(vocab_size=257, n_layer=1, n_head=2, d_model=16)}
  base.setdefault(section, {}).update(overrides)
  with pytest.raises(ConfigError, match=message):
    RunConfig.from_dict(base)


def run_binary(*args, env=None):
  return subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env={**os.environ, **(env or {})})


def test_binary_rejects_unknown_override_with_nonzero_exit(tmp_path):
  workdir = tmp_path / "run"
  res = run_binary("--config=experiments/configs/tiny.py", f"--workdir={workdir}",
                   "--config.train.stepz=3")
  assert res.returncode != 0
  assert ("error: --config.train.stepz=3: --config has no field 'stepz' (did you mean 'steps'?)"
          in res.stderr)
  assert "Traceback" not in res.stderr
  assert not workdir.exists()


def test_binary_reports_bad_value_in_one_line(tmp_path):
  workdir = tmp_path / "run"
  res = run_binary("--config=experiments/configs/tiny.py", f"--workdir={workdir}",
                   "--config.optim.lr=-0.5")
  assert res.returncode != 0
  assert "error: optim.lr: must be > 0" in res.stderr
  assert not workdir.exists()


def test_metrics_reader_drops_a_partial_last_line_and_names_a_bad_one(tmp_path):
  """A crash or a full disk leaves a row cut short at the end: skipped. Any other bad line is an
  error naming metrics.jsonl:LINE (it used to be "Expecting value: line 1 column 1")."""
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.')
  assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 2.0}]
  path.write_text('{"step": 1, "loss": 2.0}\n\x00\x00garbage\n{"step": 3, "loss": 1.0}\n')
  with pytest.raises(FileFormatError, match=rf"^{path}:2: not valid JSON: Expecting value at "
                     "column 1; fix or delete that line$"):
    read_metrics(str(tmp_path))
  path.write_text('{"step": 1}\n[1, 2]\n')
  with pytest.raises(FileFormatError, match=rf'^{path}:2: not an object with an integer "step"'):
    read_metrics(str(tmp_path))


@pytest.mark.parametrize("n_devices, overrides, message", [
    (8, dict(fsdp=3), r"train\.fsdp: 3 does not divide the 8 devices"),
    (8, dict(batch_size=12), r"train\.batch_size: 12 is not divisible by the 8 devices"),
    (2, dict(batch_size=4, fsdp=2), None),
])
def test_device_checks_name_the_field(n_devices, overrides, message):
  from sparsejax.train.loop import check_devices
  cfg = small_run_config(**overrides)
  if message is None:
    check_devices(cfg, n_devices)
  else:
    with pytest.raises(ConfigError, match=message):
      check_devices(cfg, n_devices)


def test_saved_config_that_is_not_a_config_is_named(tmp_path):
  (tmp_path / "config.json").write_text("[]")
  with pytest.raises(FileFormatError, match=rf"^{tmp_path / 'config.json'}: expected a JSON "
                     "object of config sections, got list"):
    train(small_run_config(), str(tmp_path), progress=lambda _: None)
  (tmp_path / "config.json").write_text('{"model": ')
  with pytest.raises(FileFormatError, match=rf"^{tmp_path / 'config.json'}: not valid JSON"):
    train(small_run_config(), str(tmp_path), progress=lambda _: None)
  assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "config.json"]


def test_workdir_lock_refuses_a_second_holder(tmp_path):
  """flock locks conflict between two opens of the lock file, even in one process."""
  from sparsejax.utils.errors import PathError
  from sparsejax.utils.files import lock_directory
  with lock_directory(tmp_path) as locked:
    assert locked
    with pytest.raises(PathError, match=f"^another process is using {tmp_path}: wait for it"):
      with lock_directory(tmp_path):
        pass
  with lock_directory(tmp_path) as locked:  # released on exit
    assert locked


@pytest.mark.parametrize("override, message", [
    ("--config.train.batch_size=12", "error: train.batch_size: 12 is not divisible by the 8 "
     "devices (each device takes an equal share of every batch)"),
    ("--config.train.fsdp=3", "error: train.fsdp: 3 does not divide the 8 devices"),
])
def test_device_mismatch_is_refused_before_anything_is_written(tmp_path, override, message):
  """On 8 (fake) devices: the batch error used to be a raw JAX sharding message, raised after
  config.json and data/ were written, so that the corrected command was refused."""
  workdir = tmp_path / "run"
  res = run_binary("--config=experiments/configs/tiny.py", f"--workdir={workdir}", override,
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                        "JAX_PLATFORMS": "cpu"})
  assert res.returncode == 1
  assert res.stderr.strip().splitlines()[0].startswith(message), res.stderr[-2000:]
  assert len(res.stderr.strip().splitlines()) == 1
  assert not workdir.exists()


@pytest.mark.parametrize("delay", [0.5, 8.0])
def test_ctrl_c_before_training_is_one_line_and_leaves_nothing(tmp_path, delay):
  """Ctrl-C while JAX is imported or while the data is built (a BPE on 20M characters takes
  longer than the delay): exit 130, one line, and the half-built workdir is removed."""
  import signal
  import time
  workdir = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "train.py"),
                           "--config=experiments/configs/tiny.py", f"--workdir={workdir}",
                           "--config.data.tokenizer_train_chars=20000000",
                           "--config.data.train_tokens=50000000"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(delay)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert (proc.returncode, err) == (130, "interrupted\n"), (proc.returncode, err[-2000:])
  assert not workdir.exists()


@pytest.mark.parametrize("asked", [True, False])
def test_a_missing_tensorboardx_is_said_once_when_tensorboard_is_asked_for(tmp_path, monkeypatch,
                                                                           asked):
  import sys
  from sparsejax.train.metrics import MetricWriter
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
  lines = []
  writer = MetricWriter(str(tmp_path), tensorboard=asked, progress=lines.append)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert len(lines) == int(asked)
  if asked:
    assert "tensorboardX is not installed" in lines[0] and "'.[tb]'" in lines[0]
