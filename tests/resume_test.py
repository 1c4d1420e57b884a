"""Kill / crash / resume behaviour of the training binary, end to end in subprocesses."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from sparsejax.train import checkpoint
from sparsejax.sparse import optim
from sparsejax.train import step as train_step
from sparsejax.train.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[1]

CONFIG_TEMPLATE = '''
import sys
sys.path.insert(0, {configs!r})
from base import base_config, update
def get_config():
  return update(
      base_config(),
      model=dict(block_size=32, vocab_size=257, n_layer=1, n_head=2, d_head=8, d_model=16,
                 d_mlp=32, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                 learnable_bigram_table=True, grad_checkpointing=False, nope=True),
      sparsity=dict(target_density=0.25, embed_density_factor=2.0, anneal_end=0.5),
      optim=dict(lr=0.01),
      data=dict(train_tokens=20_000, eval_tokens=2_000, tokenizer="bytes"),
      train=dict(steps={steps}, batch_size=4, seq_len=32, log_every=5, eval_every=10,
                 eval_batches=1, checkpoint_every={every}, keep_checkpoints=3))
'''


def write_config(tmp_path, steps=40, every=5) -> str:
  path = tmp_path / f"cfg_{steps}_{every}.py"
  path.write_text(CONFIG_TEMPLATE.format(steps=steps, every=every,
                                         configs=str(ROOT / "experiments" / "configs")))
  return str(path)


def run_binary(config, workdir, *extra, env=None, **kw):
  return subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"),
                         f"--config={config}", f"--workdir={workdir}", *extra],
                        capture_output=True, text=True, timeout=600, cwd=ROOT,
                        env={**os.environ, **(env or {})}, **kw)


def final_state(config_path, workdir):
  """The latest checkpoint's state, restored on the host."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", config_path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = RunConfig.from_dict(mod.get_config().to_dict())
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, cfg.train.steps)
  _, state = train_step.create_train_state(cfg.model, tx, seed=cfg.train.seed)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    restored, meta = ckpt.restore(state)
  finally:
    ckpt.close()
  return restored, meta


def snapshot(directory: Path) -> dict:
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob("*") if p.is_file()}


def test_sigkill_and_resume_is_bit_identical(tmp_path):
  config = write_config(tmp_path)
  straight = tmp_path / "straight"
  res = run_binary(config, straight)
  assert res.returncode == 0, res.stderr[-2000:]

  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "train.py"),
                           f"--config={config}", f"--workdir={killed}"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline:  # wait for a finished checkpoint, then kill mid-run
    ckpts = killed / "checkpoints"
    if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps_at_kill = sorted(int(p.name) for p in (killed / "checkpoints").iterdir()
                         if p.name.isdigit())
  assert steps_at_kill and steps_at_kill[-1] < 40, steps_at_kill  # it really died mid-run

  res = run_binary(config, killed)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "resuming from the checkpoint at step" in res.stdout

  a, meta_a = final_state(config, straight)
  b, meta_b = final_state(config, killed)
  assert meta_a["step"] == meta_b["step"] == 40
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # metrics.jsonl has each logged step once (rows after the last checkpoint were dropped).
  steps = [int(line.split('"step": ')[1].split(",")[0].rstrip("}"))
           for line in (killed / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps)) and steps[-1] == 40


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path):
  config = write_config(tmp_path, steps=10, every=5)
  work = tmp_path / "run"
  assert run_binary(config, work).returncode == 0
  ckpts = work / "checkpoints"
  # A crash while writing step 10 leaves orbax's temporary directory, partially written.
  shutil.rmtree(ckpts / "10")
  shutil.copytree(ckpts / "5", ckpts / "10.orbax-checkpoint-tmp")
  for f in list((ckpts / "10.orbax-checkpoint-tmp" / "state").rglob("*"))[::2]:
    if f.is_file():
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  res = run_binary(config, work)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "resuming from the checkpoint at step 5" in res.stdout
  assert sorted(p.name for p in ckpts.iterdir()) == ["10", "5"]


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_overwritten(tmp_path):
  config = write_config(tmp_path, steps=10, every=5)
  work = tmp_path / "run"
  assert run_binary(config, work).returncode == 0
  for f in (work / "checkpoints" / "10" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 100:
      f.write_bytes(b"garbage" * 10)
  before = snapshot(work)
  res = run_binary(config, work)
  assert res.returncode != 0
  assert "error: checkpoint 10" in res.stderr and "cannot be restored" in res.stderr
  assert snapshot(work) == before


def test_conflicting_config_on_resume_is_refused(tmp_path):
  config = write_config(tmp_path, steps=10, every=5)
  work = tmp_path / "run"
  assert run_binary(config, work).returncode == 0
  before = snapshot(work)
  res = run_binary(config, work, "--config.optim.lr=0.5")
  assert res.returncode != 0
  assert "optim.lr (0.01 -> 0.5)" in res.stderr and "--allow_config_change" in res.stderr
  assert snapshot(work) == before


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  config = write_config(tmp_path, steps=10, every=5)
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  res = run_binary(config, blocker / "run")
  assert res.returncode != 0
  assert "is not writable" in res.stderr
  assert blocker.read_text() == "not a directory"


def test_missing_corpus_directory_fails_before_writing(tmp_path):
  config = write_config(tmp_path, steps=10, every=5)
  work = tmp_path / "run"
  res = run_binary(config, work, "--config.data.python_weight=1.0",
                   f"--config.data.python_dirs={tmp_path / 'nowhere'}")
  assert res.returncode != 0
  assert "error: data.python_dirs: no such directory" in res.stderr
  assert not work.exists()


@pytest.mark.parametrize("skip", [False, True])
def test_non_finite_loss(tmp_path, skip):
  from sparsejax.train.loop import TrainingError, train
  cfg = RunConfig.from_dict({
      "model": dict(block_size=32, vocab_size=257, n_layer=1, n_head=2, d_head=8, d_model=16,
                    d_mlp=32, rms_norm=True, tied_unembed=False, grad_checkpointing=False),
      "optim": dict(lr=1e30, warmup_frac=0.2, normalize_grads=False),
      "data": dict(train_tokens=20_000, eval_tokens=2_000, tokenizer="bytes"),
      "train": dict(steps=10, batch_size=4, seq_len=32, log_every=1, eval_every=10,
                    eval_batches=1, checkpoint_every=1, skip_nonfinite=skip),
  })
  work = tmp_path / "run"
  if not skip:
    with pytest.raises(TrainingError, match=r"non-finite loss at step (\d+); the last good "
                       r"checkpoint is step (\d+)") as info:
      train(cfg, str(work), progress=lambda _: None)
    bad = int(info.value.args[0].split("step ")[1].split(";")[0])
    steps = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] < bad
  else:
    last = train(cfg, str(work), progress=lambda _: None)
    assert last["skipped"] in (0.0, 1.0)
    from sparsejax.train.metrics import read_metrics
    assert sum(r.get("skipped", 0) for r in read_metrics(str(work))) >= 1
