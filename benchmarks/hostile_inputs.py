"""Bad inputs and faults against the real binaries: exit code, what is printed, what changed.

  PYTHONPATH=. .venv/bin/python benchmarks/hostile_inputs.py [--only=SUBSTRING] [--keep]

Not a timed benchmark: a reproducible check of the error policy (BUILD.md, "Run directories").
It trains two tiny runs in a temporary directory (a byte-tokenizer run for the training binary and
a BPE run for eval / prune / view), then runs every case on a fresh copy: the binary's exit code,
its stderr (line count and the first line), and the sha256 of the directory the case points at
(every file's path and bytes) before and after. Each row is checked against what should happen:
a user error exits 1 with exactly one line and changes nothing; a recovery (a damaged checkpoint,
a partial metrics line) exits 0 and says what it did; Ctrl-C exits 130 with one line after saving
a checkpoint. Prints a Markdown table, then ``hostile_inputs_ok: PASSED/TOTAL``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT / "tests"))  # the tests' run builders (conftest, resume_test)

@dataclasses.dataclass
class Case:
  name: str  # the bad input, as a user would describe it
  binary: str  # experiments/<binary>
  args: Callable[["Env"], list[str]]  # flags, from the case's directories
  setup: Callable[["Env"], None] = lambda env: None  # damage to apply before running
  target: Callable[["Env"], Path] = lambda env: env.run  # the directory whose sha256 is taken
  rc: int = 1  # expected exit code
  changes: bool = False  # whether the case should change the target directory
  expect: str = ""  # a substring the printed line(s) must contain
  extra_env: dict = dataclasses.field(default_factory=dict)
  interrupt_after: str | None = None  # send SIGINT once stdout shows a line starting with this
  interrupt_delay: float | None = None  # ... or this many seconds after the start


@dataclasses.dataclass
class Env:
  tmp: Path  # the case's own directory
  run: Path  # a copy of the trained byte-tokenizer run
  bpe: Path  # a copy of the trained BPE run
  config: Path  # the byte run's config file


def tree_sha256(path: Path) -> str:
  """sha256 over every file's relative path and bytes (the empty string's for a missing path)."""
  h = hashlib.sha256()
  if path.is_file():
    h.update(path.read_bytes())
  elif path.is_dir():
    for p in sorted(path.rglob("*")):
      if p.is_file():
        h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes() + b"\0")
  return h.hexdigest()


def run(binary: str, args: list[str], env_extra=None, interrupt_after=None, interrupt_delay=None,
        timeout=600):
  cmd = [PY, str(ROOT / "experiments" / binary), *args]
  env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
  if interrupt_delay is not None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    time.sleep(interrupt_delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
  if interrupt_after is None:
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    return res.returncode, res.stdout, res.stderr
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, env=env)
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith(interrupt_after):
      proc.send_signal(signal.SIGINT)
      break
  rest, err = proc.communicate(timeout=timeout)
  return proc.returncode, "".join(out) + rest, err


# ------------------------------------------------------------------ damage helpers
def truncate_arrays(step_dir: Path) -> None:
  for f in (step_dir / "state" / "d").iterdir():
    f.write_bytes(f.read_bytes()[:10])


def write(path: Path, data) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data if isinstance(data, bytes) else data.encode())


def fake_pruning(env: Env, step: int) -> Path:
  """Pruning outputs (what prune.py writes) for a hand-made circuit of the BPE run at ``step``."""
  from conftest import fake_pruning as write_outputs
  return write_outputs(env.bpe, env.bpe / "prune", ["var_swap"], step)


def edit_json(path: Path, fn) -> None:
  data = json.loads(path.read_text())
  fn(data)
  path.write_text(json.dumps(data))


def user_corpus(env: Env, kind: str) -> Path:
  root = env.tmp / "corpus"
  root.mkdir(exist_ok=True)
  if kind == "binary":
    write(root / "a.txt", b"\x00\x01\x02" * 50)
  elif kind == "non_utf8":
    write(root / "a.txt", b"caf\xe9 " * 50)
  elif kind == "zero_bytes":
    write(root / "a.txt", b"")
  elif kind == "malformed_jsonl":
    write(root / "a.jsonl", '{"text": 3}\nnot json\n{"other": "x"}\n')
  elif kind == "one_file":
    write(root / "mine.txt", "".join(f"value_{i} = {i} * 2\n" for i in range(300)))
  return root


def train_args(env: Env, *extra) -> list[str]:
  return [f"--config={env.config}", f"--workdir={env.run}", *extra]


def fresh(env: Env) -> Path:
  return env.tmp / "fresh"


def files_corpus(kind: str, *extra):
  return lambda env: [f"--config={env.config}", f"--workdir={fresh(env)}",
                      "--config.data.builtin_weight=0", "--config.data.files_weight=1",
                      f"--config.data.files={user_corpus(env, kind)}",
                      "--config.data.tokenizer=bpe", "--config.model.vocab_size=2048", *extra]


def tokenizer_file(content):
  def args(env):
    write(env.tmp / "tok.json", content)
    return [f"--config={env.config}", f"--workdir={fresh(env)}", "--config.data.tokenizer=file",
            f"--config.data.tokenizer_path={env.tmp / 'tok.json'}"]
  return args


def hold_lock(env: Env) -> None:
  """A second trainer: a real one, started first and still training when the case runs."""
  cmd = [PY, str(ROOT / "experiments" / "train.py"), f"--config={env.config}",
         f"--workdir={env.tmp / 'busy'}", "--config.train.steps=100000",
         "--config.train.checkpoint_every=100000"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          cwd=ROOT)
  for line in proc.stdout:
    if line.startswith("step "):
      break
  env.busy = proc


def stop_busy(env: Env) -> None:
  proc = getattr(env, "busy", None)
  if proc is not None:
    proc.kill()
    proc.wait()


def write_config_file(env: Env, text: str) -> Path:
  write(env.tmp / "user_config.py", text)
  return env.tmp / "user_config.py"


CASES = [
    # ---- the training binary: config files and flags (a fresh workdir must not appear)
    Case("config file with a syntax error", "train.py",
         lambda e: [f"--config={write_config_file(e, 'def get_config(:')}",
                    f"--workdir={fresh(e)}"], target=fresh, expect="line 1: invalid syntax"),
    Case("config file that raises (NameError)", "train.py",
         lambda e: [f"--config={write_config_file(e, 'def get_config():' + chr(10) + '  x')}",
                    f"--workdir={fresh(e)}"], target=fresh, expect="NameError"),
    Case("config file that does not exist", "train.py",
         lambda e: [f"--config={e.tmp / 'nope.py'}", f"--workdir={fresh(e)}"], target=fresh,
         expect="No such file or directory"),
    Case("config variant that does not exist (csp.py:9x)", "train.py",
         lambda e: ["--config=experiments/configs/csp.py:9x", f"--workdir={fresh(e)}"],
         target=fresh, expect="expansion factor must be 1, 2, 4, 8 or 16"),
    Case("config variant with an unknown key (csp.py:4x,pfarc=1)", "train.py",
         lambda e: ["--config=experiments/configs/csp.py:4x,pfarc=1", f"--workdir={fresh(e)}"],
         target=fresh, expect="unknown variant key 'pfarc'"),
    Case("unknown override key (--config.train.stepz=3)", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}", "--config.train.stepz=3"],
         target=fresh, expect="stepz"),
    Case("override of the wrong type (--config.train.steps=abc)", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}", "--config.train.steps=abc"],
         target=fresh, expect="invalid literal"),
    Case("invalid value (--config.optim.lr=-0.5)", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}", "--config.optim.lr=-0.5"],
         target=fresh, expect="optim.lr: must be > 0"),
    Case("train.fsdp that does not divide the devices", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}", "--config.train.fsdp=3"],
         target=fresh, expect="train.fsdp: 3 does not divide"),
    Case("batch not divisible by 8 devices", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}",
                    "--config.train.batch_size=12"], target=fresh,
         extra_env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
         expect="train.batch_size: 12 is not divisible by the 8 devices"),
    # ---- the training binary: corpora (BPE tokenizer, files only)
    Case("python_dirs that does not exist", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}",
                    "--config.data.python_weight=1", f"--config.data.python_dirs={e.tmp / 'no'}"],
         target=fresh, expect="data.python_dirs: no such directory"),
    Case("empty user corpus (a directory with no files)", "train.py", files_corpus("empty"),
         target=fresh, expect="no usable documents (no .txt/.jsonl/.py/.md files found"),
    Case("binary-only user corpus", "train.py", files_corpus("binary"), target=fresh,
         expect="skipped: 1 binary file"),
    Case("non-UTF-8 user corpus", "train.py", files_corpus("non_utf8"), target=fresh,
         expect="skipped: 1 non-UTF-8 file"),
    Case("0-byte user corpus", "train.py", files_corpus("zero_bytes"), target=fresh,
         expect="skipped: 1 empty file"),
    Case("all-malformed JSONL corpus", "train.py", files_corpus("malformed_jsonl"), target=fresh,
         expect="skipped: 3 JSONL lines without text"),
    Case("single small file, files only (too little text for a 2048-token BPE)", "train.py",
         files_corpus("one_file"), target=fresh, expect="data.bpe_vocab_size: the corpus text"),
    Case("single small file next to the built-in corpus (BPE)", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}",
                    "--config.data.files_weight=0.2",
                    f"--config.data.files={user_corpus(e, 'one_file') / 'mine.txt'}",
                    "--config.data.tokenizer=bpe", "--config.data.bpe_vocab_size=512",
                    "--config.data.tokenizer_train_chars=200000", "--config.model.vocab_size=512",
                    "--config.train.steps=2", "--config.train.checkpoint_every=2"],
         target=fresh, rc=0, changes=True, expect="1 usable document from 1 file"),
    Case("tokenizer file that is a JSON list ([1,2,3])", "train.py", tokenizer_file("[1, 2, 3]"),
         target=fresh, expect="got a JSON list"),
    Case('tokenizer file that is another JSON object ({"a": 1})', "train.py",
         tokenizer_file('{"a": 1}'), target=fresh, expect='object without a "model"'),
    Case("tokenizer file that is not JSON", "train.py", tokenizer_file("<html>"), target=fresh,
         expect="not valid JSON"),
    # ---- the training binary on an existing run
    Case("resume with a different config (optim.lr)", "train.py",
         lambda e: train_args(e, "--config.optim.lr=0.5"), expect="optim.lr (0.01 -> 0.5)"),
    Case("--allow_config_change with another architecture (n_layer 1 -> 2)", "train.py",
         lambda e: train_args(e, "--config.model.n_layer=2", "--allow_config_change"),
         expect="holds another model / optimizer structure"),
    Case("config.json that is []", "train.py", train_args,
         setup=lambda e: write(e.run / "config.json", "[]"),
         expect="expected a JSON object of config sections"),
    Case("config.json that is not JSON", "train.py", train_args,
         setup=lambda e: write(e.run / "config.json", '{"model": '), expect="not valid JSON"),
    Case("data manifest that is not JSON", "train.py", train_args,
         setup=lambda e: write(e.run / "data" / "manifest.json", "{"),
         expect="manifest.json: not valid JSON"),
    Case("garbage line in the middle of metrics.jsonl", "train.py", train_args,
         setup=lambda e: write(e.run / "metrics.jsonl", "garbage\n" + (
             e.run / "metrics.jsonl").read_text()), expect="metrics.jsonl:1: not valid JSON"),
    Case("partial last line in metrics.jsonl (+ latest checkpoint gone)", "train.py", train_args,
         setup=lambda e: (shutil.rmtree(e.run / "checkpoints" / "10"),
                          write(e.run / "metrics.jsonl", (e.run / "metrics.jsonl").read_text()
                                + '{"step": 10, "loss": 4.')),
         rc=0, changes=True, expect="resuming from the checkpoint at step 5"),
    Case("truncated latest checkpoint", "train.py", train_args,
         setup=lambda e: truncate_arrays(e.run / "checkpoints" / "10"), rc=0, changes=True,
         expect="checkpoint 10 cannot be restored"),
    Case("every checkpoint truncated", "train.py", train_args,
         setup=lambda e: [truncate_arrays(e.run / "checkpoints" / s) for s in ("5", "10")],
         expect="can be restored"),
    Case("workdir is a file", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={e.tmp / 'file' / 'run'}"],
         setup=lambda e: write(e.tmp / "file", "x"), target=lambda e: e.tmp / "file",
         expect="is not writable (Not a directory)"),
    Case("a second trainer on a workdir in use", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={e.tmp / 'busy'}",
                    "--config.train.steps=100000", "--config.train.checkpoint_every=100000"],
         setup=hold_lock, target=lambda e: e.tmp / "busy" / "data",
         expect="another process is using"),
    Case("non-finite loss before any checkpoint", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}", "--config.optim.lr=1e30",
                    "--config.optim.normalize_grads=False", "--config.train.log_every=1",
                    "--config.train.checkpoint_every=1000"], target=fresh, changes=True,
         expect="no checkpoint was written yet"),
    Case("Ctrl-C during training", "train.py",
         lambda e: [f"--config={e.config}", f"--workdir={fresh(e)}", "--config.train.steps=400",
                    "--config.train.checkpoint_every=1000"], target=fresh, rc=130, changes=True,
         interrupt_after="step 10/400", expect="run the same command to resume"),
    Case("Ctrl-C while the data of a new run is built", "train.py",
         lambda e: ["--config=experiments/configs/tiny.py", f"--workdir={fresh(e)}",
                    "--config.data.tokenizer_train_chars=20000000",
                    "--config.data.train_tokens=50000000"], target=fresh, rc=130,
         interrupt_delay=8.0, expect="interrupted"),
    # ---- eval_tasks.py
    Case("eval --tasks= (empty)", "eval_tasks.py",
         lambda e: [f"--workdir={e.bpe}", "--tasks="], target=lambda e: e.bpe,
         expect="--tasks: no task names given"),
    Case("eval --pairs=0", "eval_tasks.py", lambda e: [f"--workdir={e.bpe}", "--pairs=0"],
         target=lambda e: e.bpe, expect="0 is not a positive integer"),
    Case("eval --tasks=not_a_task", "eval_tasks.py",
         lambda e: [f"--workdir={e.bpe}", "--tasks=not_a_task"], target=lambda e: e.bpe,
         expect="unknown task(s) not_a_task"),
    Case("eval of a directory that is not a run", "eval_tasks.py",
         lambda e: [f"--workdir={e.tmp}"], target=lambda e: e.tmp, expect="is not a training run"),
    Case("eval of a workdir that does not exist", "eval_tasks.py",
         lambda e: [f"--workdir={e.tmp / 'nowhere'}"], target=lambda e: e.tmp,
         expect="no such directory"),
    Case("eval --out inside a file", "eval_tasks.py",
         lambda e: [f"--workdir={e.bpe}", "--tasks=var_swap", "--pairs=4",
                    f"--out={e.bpe / 'config.json' / 'x.json'}"], target=lambda e: e.bpe,
         expect="is not a directory"),
    # ---- prune.py
    Case("prune --out=<a file>", "prune.py",
         lambda e: [f"--workdir={e.bpe}", "--tasks=var_swap", f"--out={e.bpe / 'config.json'}"],
         target=lambda e: e.bpe, expect="is not a directory"),
    Case("prune --tasks= (empty)", "prune.py", lambda e: [f"--workdir={e.bpe}", "--tasks="],
         target=lambda e: e.bpe, expect="--tasks: no task names given"),
    Case("prune config variant that does not exist", "prune.py",
         lambda e: [f"--workdir={e.bpe}", "--config=experiments/configs/prune.py:bogus"],
         target=lambda e: e.bpe, expect="unknown variant 'bogus'"),
    Case("prune --out=ELSEWHERE of a run it cannot write into", "prune.py",
         lambda e: [f"--workdir={e.bpe}", "--tasks=var_swap", f"--out={e.tmp / 'out'}",
                    "--config=experiments/configs/prune.py:quick", "--config.mean_tokens=512"],
         setup=lambda e: write(e.bpe / "prune", "not a directory: the means cache cannot go here"),
         target=lambda e: e.bpe, rc=0, expect="node means not cached"),
    # ---- view.py
    Case("view without pruning outputs", "view.py", lambda e: [f"--workdir={e.bpe}"],
         target=lambda e: e.bpe, expect="has no summary.json"),
    Case("summary.json with an unknown config key", "view.py", lambda e: [f"--workdir={e.bpe}"],
         setup=lambda e: edit_json(fake_pruning(e, 2) / "summary.json",
                                   lambda s: s["config"].update(bogus=1)),
         target=lambda e: e.bpe, expect="config.bogus: unknown key"),
    Case("summary.json with markup as a number (nodes)", "view.py",
         lambda e: [f"--workdir={e.bpe}"],
         setup=lambda e: edit_json(fake_pruning(e, 2) / "summary.json",
                                   lambda s: s["tasks"]["var_swap"].update(nodes="<b>6</b>")),
         target=lambda e: e.bpe, expect="tasks.var_swap.nodes: expected an integer"),
    Case("summary.json that is not JSON", "view.py", lambda e: [f"--workdir={e.bpe}"],
         setup=lambda e: write(fake_pruning(e, 2) / "summary.json", '{"tasks": '),
         target=lambda e: e.bpe, expect="summary.json: not valid JSON"),
    Case("circuit file that is not JSON", "view.py", lambda e: [f"--workdir={e.bpe}"],
         setup=lambda e: write(fake_pruning(e, 2) / "circuits" / "var_swap.json", "[1,"),
         target=lambda e: e.bpe, expect="var_swap.json: not valid JSON"),
    Case("circuits pruned at a step whose checkpoint is gone", "view.py",
         lambda e: [f"--workdir={e.bpe}"],
         setup=lambda e: (fake_pruning(e, 2), shutil.rmtree(e.bpe / "checkpoints" / "2")),
         target=lambda e: e.bpe, expect="pruned at step 2, which cannot be loaded"),
]


def train_base(tmp: Path) -> tuple[Path, Path, Path]:
  """The tests' runs: resume_test's byte run (10 steps, checkpoints 5 and 10) and conftest's tiny
  BPE run (4 steps, checkpoints 2 and 4)."""
  from conftest import train_tiny_bpe_run
  from resume_test import write_config
  config = Path(write_config(tmp, steps=10, every=5))
  rc, _, err = run("train.py", [f"--config={config}", f"--workdir={tmp / 'base_run'}"])
  assert rc == 0, err
  train_tiny_bpe_run(tmp / "base_bpe", steps=4, checkpoint_every=2)
  return config, tmp / "base_run", tmp / "base_bpe"


def main(argv) -> None:
  only = next((a.split("=", 1)[1] for a in argv if a.startswith("--only=")), None)
  keep = "--keep" in argv
  from absl import logging
  logging.set_verbosity(logging.ERROR)  # orbax's warnings when this script loads a run
  tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
  t0 = time.time()
  config, base_run, base_bpe = train_base(tmp)
  print(f"trained the base runs in {tmp} ({time.time() - t0:.0f}s)", file=sys.stderr)
  rows, passed = [], 0
  cases = [c for c in CASES if only is None or only in c.name]
  for i, case in enumerate(cases):
    case_dir = tmp / f"case{i:02d}"
    case_dir.mkdir()
    env = Env(case_dir, case_dir / "run", case_dir / "bpe", config)
    shutil.copytree(base_run, env.run)
    shutil.copytree(base_bpe, env.bpe)
    try:
      case.setup(env)
      target = case.target(env)
      before = tree_sha256(target)
      rc, out, err = run(case.binary, case.args(env), case.extra_env, case.interrupt_after,
                         case.interrupt_delay)
      after = tree_sha256(target)
    finally:
      stop_busy(env)
    err_lines = err.strip().splitlines()
    if case.rc == 0:  # a recovery: the note is on stdout, stderr stays empty
      shown = ([line for line in out.splitlines() if case.expect in line][:1]
               or out.splitlines()[-1:])
      ok = rc == 0 and not err_lines and bool(shown) and case.expect in shown[0]
    else:
      shown = err_lines
      ok = rc == case.rc and len(err_lines) == 1 and case.expect in err_lines[0]
    changed = before != after
    ok = ok and changed == case.changes
    passed += ok
    line = shown[0] if shown else ""
    line = line.replace(str(tmp), "$TMP").replace("|", "\\|")
    rows.append(f"| {i + 1} | {case.name} | `{case.binary}` | {rc} | {len(err_lines)} | "
                f"`{line[:160]}{'…' if len(line) > 160 else ''}` | "
                f"{before[:8]} → {after[:8]} ({'changed' if changed else 'unchanged'}"
                f"{', expected' if changed == case.changes else ', NOT EXPECTED'}) | "
                f"{'ok' if ok else 'FAIL'} |")
    print(f"{i + 1}/{len(cases)} {case.name}: rc {rc}, {'ok' if ok else 'FAIL'}", file=sys.stderr)
  print("| # | bad input | binary | exit | stderr lines | line printed | sha256 before → after "
        "| ok |")
  print("|---|---|---|---|---|---|---|---|")
  print("\n".join(rows))
  print(f"\n(sha256 of the directory the case points at: the run, or for a fresh --workdir the "
        f"path that must not appear; recoveries print their note on stdout; "
        f"{time.time() - t0:.0f}s)")
  if not keep:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f"hostile_inputs_ok: {passed}/{len(cases)}")


if __name__ == "__main__":
  main(sys.argv[1:])
