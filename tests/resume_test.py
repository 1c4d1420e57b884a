"""Kill / crash / resume behaviour of the training binary, end to end in subprocesses.

The scenarios of a run directory that must not be corrupted: SIGKILL, Ctrl-C, a crash during a
save, a damaged or incompatible checkpoint, a full disk, a partial metrics line, and two trainers
started on one workdir. Two module fixtures train the runs the tests copy (a 40-step run that
resumed runs are compared with bit for bit, and a 10-step run with checkpoints at 5 and 10).
"""

import json
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
from sparsejax.configs.base import base_config, update
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
  path.write_text(CONFIG_TEMPLATE.format(steps=steps, every=every))
  return str(path)


def run_binary(config, workdir, *extra, env=None, **kw):
  return subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"),
                         f"--config={config}", f"--workdir={workdir}", *extra],
                        capture_output=True, text=True, timeout=600, cwd=ROOT,
                        env={**os.environ, **(env or {})}, **kw)


def abstract_state(config_path):
  """The train state of the run configured in ``config_path``, freshly initialised."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", config_path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = RunConfig.from_dict(mod.get_config().to_dict())
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, cfg.train.steps)
  return train_step.create_train_state(cfg.model, tx, seed=cfg.train.seed)[1]


def final_state(config_path, workdir):
  """The latest checkpoint's state, restored on the host (read-only)."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  try:
    restored, meta = ckpt.restore(abstract_state(config_path), note=lambda _: None)
  finally:
    ckpt.close()
  return restored, meta


def snapshot(directory: Path) -> dict:
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in directory.rglob("*") if p.is_file()}


def assert_same_state(config, work_a, work_b, step):
  a, meta_a = final_state(config, work_a)
  b, meta_b = final_state(config, work_b)
  assert meta_a["step"] == meta_b["step"] == step
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def logged_steps(work: Path) -> list[int]:
  return [json.loads(line)["step"] for line in (work / "metrics.jsonl").read_text().splitlines()]


def one_error_line(res) -> str:
  """The binary's stderr, which must be exactly one line."""
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1, res.stderr[-3000:]
  return lines[0]


def trained(tmp_path_factory, name: str, steps: int):
  """(config, workdir) of an uninterrupted run of ``steps`` steps, checkpoints every 5."""
  tmp = tmp_path_factory.mktemp(name)
  config = write_config(tmp, steps=steps, every=5)
  res = run_binary(config, tmp / "run")
  assert res.returncode == 0, res.stderr[-2000:]
  return config, tmp / "run"


@pytest.fixture(scope="module")
def straight40(tmp_path_factory):
  """The run resumed runs are compared with, bit for bit."""
  return trained(tmp_path_factory, "straight40", 40)


@pytest.fixture(scope="module")
def run10(tmp_path_factory):
  """A finished run with checkpoints at 5 and 10; copy it to use it."""
  return trained(tmp_path_factory, "run10", 10)


def copy_run(run, tmp_path) -> Path:
  shutil.copytree(run, tmp_path / "run")
  return tmp_path / "run"


def truncate_arrays(step_dir: Path) -> None:
  """What a crash mid-copy or a bad disk leaves: every array data file cut to 10 bytes."""
  for f in (step_dir / "state" / "d").iterdir():
    f.write_bytes(f.read_bytes()[:10])


def test_sigkill_and_resume_is_bit_identical(tmp_path, straight40):
  config, straight = straight40
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
  assert_same_state(config, straight, killed, 40)
  # metrics.jsonl has each logged step once (rows after the last checkpoint were dropped).
  steps = logged_steps(killed)
  assert steps == sorted(set(steps)) and steps[-1] == 40


def test_two_trainers_on_one_fresh_workdir(tmp_path, straight40):
  """Started together: one trains, the other is refused at once and touches nothing (it used to
  remove the data the first was training on, or to train too and lose metrics rows)."""
  config, straight = straight40
  work = tmp_path / "run"
  cmd = [sys.executable, str(ROOT / "experiments" / "train.py"), f"--config={config}",
         f"--workdir={work}"]
  procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for _ in range(2)]
  results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
  codes = sorted(rc for rc, _, _ in results)
  assert codes == [0, 1], [(rc, err[-2000:]) for rc, _, err in results]
  refused = next(err for rc, _, err in results if rc == 1).strip().splitlines()
  assert refused == [f"error: another process is using {work}: wait for it to finish, or use "
                     "another directory"]
  assert_same_state(config, straight, work, 40)
  assert logged_steps(work) == list(range(5, 41, 5))
  from sparsejax.data import dataset as data_lib
  ds = data_lib.load(str(work / "data"))
  assert sum(map(len, ds.train)) == 20_000 and sum(map(len, ds.eval)) == 2_000


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
  config = write_config(tmp_path, steps=400, every=1000)  # no regular checkpoint before the end
  work = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "train.py"),
                           f"--config={config}", f"--workdir={work}"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in proc.stdout:  # wait until it trains
    if line.startswith("step 10/400"):
      break
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err[-3000:]
  steps = [int(p.name) for p in (work / "checkpoints").iterdir()]
  assert len(steps) == 1 and 10 <= steps[0] < 400, steps
  assert err.strip().splitlines() == [
      f"interrupted at step {steps[0]} (checkpoint saved in {work / 'checkpoints'}); run the same "
      "command to resume"]
  state, meta = final_state(config, work)
  assert meta["step"] == int(state.step) == steps[0]
  assert logged_steps(work)[-1] == steps[0]


def test_interrupted_save_leaves_previous_checkpoint_usable(tmp_path, run10):
  config, run = run10
  work = copy_run(run, tmp_path)
  ckpts = work / "checkpoints"
  # A crash while writing step 10 leaves orbax's temporary directory, partially written.
  shutil.rmtree(ckpts / "10")
  shutil.copytree(ckpts / "5", ckpts / "10.orbax-checkpoint-tmp")
  for f in list((ckpts / "10.orbax-checkpoint-tmp" / "state").rglob("*"))[::2]:
    if f.is_file():
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  # ... and a partial last line in metrics.jsonl (a row cut short): it is dropped, not an error.
  with open(work / "metrics.jsonl", "a") as f:
    f.write('{"step": 10, "loss": 4.')
  res = run_binary(config, work)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "resuming from the checkpoint at step 5" in res.stdout
  assert sorted(p.name for p in ckpts.iterdir()) == ["10", "5"]
  assert logged_steps(work) == [5, 10]
  assert_same_state(config, run, work, 10)


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, run10):
  config, run = run10
  work = copy_run(run, tmp_path)
  truncate_arrays(work / "checkpoints" / "10")
  res = run_binary(config, work)
  assert res.returncode == 0, res.stderr[-2000:]
  notes = [line for line in res.stdout.splitlines() if "cannot be restored" in line]
  assert len(notes) == 1, res.stdout
  assert notes[0].startswith("checkpoint 10 cannot be restored (") and notes[0].endswith(
      f"moved to {work / 'checkpoints-damaged'}; using checkpoint 5")
  assert "resuming from the checkpoint at step 5" in res.stdout
  # No orbax / TensorStore noise: no thread tracebacks, no "Event loop is closed".
  assert res.stderr.strip() == "", res.stderr[-3000:]
  # The damaged step is kept aside, and step 10 was computed again, bit-identical to the original.
  assert (work / "checkpoints-damaged" / "10" / "state").is_dir()
  assert_same_state(config, run, work, 10)


NOISE_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from resume_test import abstract_state
from sparsejax.train import checkpoint
state = abstract_state({config!r})
try:
  for _ in range(6):
    try:
      checkpoint.Checkpointer({ckpts!r}, read_only=True).restore(state, step=10)
    except checkpoint.CheckpointError:
      pass
finally:
  time.sleep(2)  # TensorStore completes the abandoned reads in the meantime
print("done")
"""


def test_failed_restores_leave_no_thread_noise(tmp_path, run10):
  """Each failed restore abandons TensorStore reads whose completions hit orbax's closed event
  loop ("RuntimeError: Event loop is closed", a traceback each, hundreds of lines); how many
  depends on timing, so this restores a damaged checkpoint six times in one process."""
  config, run = run10
  work = copy_run(run, tmp_path)
  truncate_arrays(work / "checkpoints" / "10")
  script = NOISE_SCRIPT.format(tests=str(ROOT / "tests"), config=config,
                               ckpts=str(work / "checkpoints"))
  res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
  assert res.returncode == 0 and res.stdout.strip().endswith("done"), res.stderr[-3000:]
  noise = [line for line in res.stderr.splitlines() if not line.startswith("WARNING:absl:")]
  assert noise == [], "\n".join(noise[:20])  # (orbax warns that a reader opens read-only)


FILTER_SCRIPT = """
import asyncio, gc, logging, sys, types
logging.basicConfig()
sys.unraisablehook = lambda u: print(f"unraisable {u.exc_type.__name__}: {u.exc_value}",
                                     file=sys.stderr)
from sparsejax.train import checkpoint
checkpoint._ignore_orphaned_callbacks()  # what every Checkpointer installs
loop = asyncio.new_event_loop()
for text in ["OUT_OF_RANGE: Error reading [tensorstore_spec='{}']", "an unrelated bug"]:
  future = loop.create_future()
  future.set_exception(ValueError(text))
  del future
# A failed write as orbax's serialization raises it (its frames in orbax's files, no "tensorstore"
# in the text), and an unrelated bug, each reported through the _GatheringFuture that gathered it.
space = {}
exec(compile("def write(t):\\n  raise ValueError(t)\\n",
             "/lib/orbax/checkpoint/serialization.py", "exec"), space)
def bug(t):
  raise ValueError(t)
for fail, text in [(space["write"], "RESOURCE_EXHAUSTED: Error writing: No space left on device"),
                   (bug, "a gathered unrelated bug")]:
  try:
    fail(text)
  except ValueError as e:
    error = e
  child = loop.create_future()
  gathered = asyncio.gather(child)
  child.set_exception(error)
  loop.run_until_complete(asyncio.sleep(0))
  del child, gathered, error
gc.collect()
loop.close()
for exc in [RuntimeError("Event loop is closed"), RuntimeError("another bug")]:
  sys.unraisablehook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=exc,
                                           exc_traceback=None, err_msg=None, object=None))
"""


def test_orbax_noise_filters_drop_only_orphaned_tensorstore_events():
  """What the filters drop: asyncio's report of a never-retrieved TensorStore error, and the
  unraisable "Event loop is closed"; the same events from anything else still print."""
  res = subprocess.run([sys.executable, "-c", FILTER_SCRIPT], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "tensorstore" not in res.stderr and "Event loop is closed" not in res.stderr
  assert "No space left" not in res.stderr
  assert "ValueError: an unrelated bug" in res.stderr
  assert "ValueError: a gathered unrelated bug" in res.stderr
  assert "unraisable RuntimeError: another bug" in res.stderr


def test_no_restorable_checkpoint_is_one_line_and_nothing_is_changed(tmp_path, run10):
  config, run = run10
  work = copy_run(run, tmp_path)
  for step in ("5", "10"):
    truncate_arrays(work / "checkpoints" / step)
  before = snapshot(work)
  res = run_binary(config, work)
  assert res.returncode == 1
  line = one_error_line(res)
  assert line.startswith(f"error: no checkpoint in {work / 'checkpoints'} can be restored "
                         "(checkpoint 10: ") and "checkpoint 5: " in line
  assert snapshot(work) == before


def test_allow_config_change_cannot_change_the_architecture_and_keeps_the_run(tmp_path, run10):
  """The config is rewritten only after a successful restore: an architecture change is refused
  as such, and the original command still resumes the run."""
  config, run = run10
  work = copy_run(run, tmp_path)
  before = snapshot(work)
  res = run_binary(config, work, "--config.model.n_layer=2", "--allow_config_change")
  assert res.returncode == 1
  line = one_error_line(res)
  assert "holds another model / optimizer structure (params.blocks.1." in line
  assert ("--allow_config_change cannot resume after changing model.n_layer (1 -> 2); use "
          "another --workdir") in line
  assert snapshot(work) == before
  res = run_binary(config, work)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "nothing to do: the checkpoint is already at step 10 of 10" in res.stdout


def test_conflicting_config_on_resume_is_refused(tmp_path, run10):
  config, run = run10
  work = copy_run(run, tmp_path)
  before = snapshot(work)
  res = run_binary(config, work, "--config.optim.lr=0.5")
  assert res.returncode == 1
  line = one_error_line(res)
  assert "optim.lr (0.01 -> 0.5)" in line and "--allow_config_change" in line
  assert snapshot(work) == before


FULL_DISK_SCRIPT = """
set -e
mount -t tmpfs -o size=1400k tmpfs "$MNT"
set +e
TRAIN="$PY experiments/train.py --config=$CONFIG --workdir=$MNT/run"
$TRAIN > "$OUT/full.out" 2> "$OUT/full.err"
echo $? > "$OUT/full.rc"
mount -o remount,size=8m "$MNT"
$TRAIN > "$OUT/resume.out" 2> "$OUT/resume.err"
echo $? > "$OUT/resume.rc"
cp -r "$MNT/run" "$OUT/run"
"""


def test_full_disk_is_one_line_and_the_run_resumes_bit_identical(tmp_path, straight40):
  """A tmpfs too small for the run (in a private mount namespace): the save that fills it fails
  in one line naming the step and the last good checkpoint; with space again, the same command
  resumes and ends bit-identical to an uninterrupted run."""
  if not shutil.which("unshare") or subprocess.run(
      ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
    pytest.skip("needs `unshare -rm` (user + mount namespaces) to mount a small tmpfs")
  config, straight = straight40
  mnt = tmp_path / "mnt"
  mnt.mkdir()
  env = {**os.environ, "MNT": str(mnt), "OUT": str(tmp_path), "PY": sys.executable,
         "CONFIG": config}
  res = subprocess.run(["unshare", "-rm", "bash", "-c", FULL_DISK_SCRIPT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-2000:]
  assert (tmp_path / "full.rc").read_text().strip() == "1"
  err = (tmp_path / "full.err").read_text().strip().splitlines()
  assert len(err) == 1, err[:40]
  assert "(No space left on device)" in err[0] and "the last good checkpoint is" in err[0], err
  assert (tmp_path / "resume.rc").read_text().strip() == "0", (tmp_path / "resume.err").read_text()
  assert "resuming from the checkpoint at step" in (tmp_path / "resume.out").read_text()
  assert_same_state(config, straight, tmp_path / "run", 40)
  assert logged_steps(tmp_path / "run") == list(range(5, 41, 5))


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  config = write_config(tmp_path, steps=10, every=5)
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  res = run_binary(config, blocker / "run")
  assert res.returncode == 1
  assert one_error_line(res) == (f"error: workdir {blocker / 'run'} is not writable (Not a "
                                 "directory)")
  assert blocker.read_text() == "not a directory"


def test_missing_corpus_directory_fails_before_writing(tmp_path):
  config = write_config(tmp_path, steps=10, every=5)
  work = tmp_path / "run"
  res = run_binary(config, work, "--config.data.python_weight=1.0",
                   f"--config.data.python_dirs={tmp_path / 'nowhere'}")
  assert res.returncode == 1
  assert one_error_line(res).startswith("error: data.python_dirs: no such directory")
  assert not work.exists()


@pytest.mark.parametrize("skip, every", [(False, 1), (False, 100), (True, 1)])
def test_non_finite_loss(tmp_path, skip, every):
  from sparsejax.train.loop import TrainingError, train
  cfg = RunConfig.from_dict({
      "model": dict(block_size=32, vocab_size=257, n_layer=1, n_head=2, d_head=8, d_model=16,
                    d_mlp=32, rms_norm=True, tied_unembed=False, grad_checkpointing=False),
      "optim": dict(lr=1e30, warmup_frac=0.2, normalize_grads=False),
      "data": dict(train_tokens=20_000, eval_tokens=2_000, tokenizer="bytes"),
      "train": dict(steps=10, batch_size=4, seq_len=32, log_every=1, eval_every=10,
                    eval_batches=1, checkpoint_every=every, skip_nonfinite=skip),
  })
  work = tmp_path / "run"
  if not skip and every == 1:
    with pytest.raises(TrainingError, match=r"non-finite loss at step (\d+); the last good "
                       r"checkpoint is step (\d+)") as info:
      train(cfg, str(work), progress=lambda _: None)
    bad = int(info.value.args[0].split("step ")[1].split(";")[0])
    good = int(info.value.args[0].split("checkpoint is step ")[1].split(" ")[0])
    steps = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] == good < bad
  elif not skip:  # no checkpoint before the loss went bad: none is claimed
    with pytest.raises(TrainingError, match=r"non-finite loss (nan |inf )?at step \d+; no "
                       r"checkpoint was written yet$"):
      train(cfg, str(work), progress=lambda _: None)
    assert not any((work / "checkpoints").iterdir())
  else:
    last = train(cfg, str(work), progress=lambda _: None)
    assert last["skipped"] in (0.0, 1.0)
    from sparsejax.train.metrics import read_metrics
    assert sum(r.get("skipped", 0) for r in read_metrics(str(work))) >= 1
