"""Real scale-out: the training binary as two processes (jax.distributed on localhost, gloo CPU
collectives, two CPU devices each, fsdp = 2), killed after a checkpoint and resumed, ends where
one process with four devices ends."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from resume_test import final_state  # the latest checkpoint, restored on this one device
from sparsejax.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 40, 5
CONFIG = f'''
from sparsejax.configs.base import base_config, update
def get_config():
  return update(
      base_config(),
      model=dict(block_size=32, vocab_size=257, n_layer=1, n_head=2, d_head=8, d_model=16,
                 d_mlp=32, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                 learnable_bigram_table=True, grad_checkpointing=False, nope=True,
                 afrac=0.5, afrac_loctypes="mlp_neuron"),
      sparsity=dict(target_density=0.25, embed_density_factor=2.0, anneal_end=0.5),
      optim=dict(lr=0.01),
      data=dict(train_tokens=20_000, eval_tokens=2_000, tokenizer="bytes"),
      train=dict(steps={STEPS}, batch_size=8, seq_len=16, log_every=1, eval_every={STEPS},
                 eval_batches=1, checkpoint_every={EVERY}, keep_checkpoints=10, fsdp=2))
'''


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(config, workdir, devices, process_id=None, port=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  if process_id is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(process_id))
  return subprocess.Popen([sys.executable, str(ROOT / "experiments" / "train.py"),
                           f"--config={config}", f"--workdir={workdir}"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def launch_pair(config, workdir):
  port = free_port()
  return [launch(config, workdir, 2, i, port) for i in range(2)]


def finish(procs, timeout=600):
  outs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append(out)
    assert p.returncode == 0, out[-3000:]
  return outs


def saved_steps(workdir: Path) -> list[int]:
  ckpts = workdir / "checkpoints"
  return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.exists() else []


def test_two_processes_killed_and_resumed_match_one_process(tmp_path):
  config = tmp_path / "cfg.py"
  config.write_text(CONFIG)
  single = tmp_path / "single"
  out = finish([launch(config, single, 4)])[0]
  assert "mesh {'data': 2, 'fsdp': 2}" in out, out[-2000:]

  multi = tmp_path / "multi"
  procs = launch_pair(config, multi)
  deadline = time.time() + 600
  while time.time() < deadline and not saved_steps(multi):  # a finished checkpoint, then kill
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.05)
  for p in procs:
    p.send_signal(signal.SIGKILL)
  outs = [p.communicate()[0] for p in procs]
  at_kill = saved_steps(multi)
  assert at_kill and at_kill[-1] < STEPS, (at_kill, outs[0][-2000:])  # it died mid-run

  outs = finish(launch_pair(config, multi))
  assert all(f"resuming from the checkpoint at step {at_kill[-1]}" in o for o in outs), outs[0]
  assert "mesh {'data': 2, 'fsdp': 2}" in outs[0]

  one, meta_one = final_state(config, single)
  two, meta_two = final_state(config, multi)
  assert meta_one["step"] == meta_two["step"] == STEPS
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(a) == np.count_nonzero(b)
  # Losses and L0 of every step both runs logged (a row logged one step late can be lost when
  # the kill falls between a checkpoint and the next step).
  one_rows = {r["step"]: r for r in read_metrics(str(single))}
  two_rows = {r["step"]: r for r in read_metrics(str(multi))}
  assert list(one_rows) == list(range(1, STEPS + 1))
  common = sorted(set(one_rows) & set(two_rows))
  assert len(common) >= STEPS - 2 and common[-1] == STEPS, sorted(two_rows)
  np.testing.assert_allclose([two_rows[s]["loss"] for s in common],
                             [one_rows[s]["loss"] for s in common], rtol=1e-5)
  assert [two_rows[s]["l0"] for s in common] == [one_rows[s]["l0"] for s in common]


IMPORT_ALL = """
import importlib, pkgutil
import jax._src.xla_bridge as xb
import sparsejax
for m in pkgutil.walk_packages(sparsejax.__path__, "sparsejax."):
  importlib.import_module(m.name)
print("initialised" if xb._backends else "not initialised")
"""


def test_importing_the_package_does_not_start_the_backend():
  """jax.distributed.initialize() must run before any XLA backend exists, and the binaries import
  the package first: no module may compute with jax at import time."""
  res = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert res.returncode == 0, res.stderr[-2000:]
  assert res.stdout.strip().endswith("not initialised"), res.stdout
