"""The training loop behind ``experiments/train.py``.

``train(cfg, workdir)`` makes the run directory self-describing and resumable::

  workdir/config.json      the RunConfig (a resumed run must match it, see below)
  workdir/data/            tokenizer, token shards and their manifest (sparsejax.data)
  workdir/checkpoints/     orbax checkpoints: state + step (async, atomic, last N kept)
  workdir/metrics.jsonl    one JSON object per logged step
  workdir/tensorboard/     events, when tensorboardX is installed

Starting on a workdir that has checkpoints resumes from the latest one; the batches of step s are a
pure function of (seed, s, process), so the resumed run computes exactly what an uninterrupted run
would. A config that differs from the saved one (other than logging / checkpoint cadence) is
refused unless ``allow_config_change``. The loop never syncs with the host except to log, evaluate
and checkpoint; a non-finite loss stops the run naming the step, without checkpointing past the last
finite one (or, with ``train.skip_nonfinite``, the step's update is dropped and counted).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data import dataset as data_lib
from sparsejax.train import distributed
from sparsejax.sparse import optim
from sparsejax.train import step as train_step
from sparsejax.train.checkpoint import Checkpointer
from sparsejax.utils.errors import ConfigError
from sparsejax.train.metrics import MetricWriter
from sparsejax.utils.files import atomic_write, atomic_write_json

if TYPE_CHECKING:  # run_config composes LoopConfig (defined here) with the other sections
  from sparsejax.train.run_config import RunConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
  """The training loop."""

  steps: int = 1000  # optimizer steps (the schedules' total)
  batch_size: int = 16  # sequences per step (global, over all processes)
  seq_len: int = 128  # tokens per sequence (<= model.block_size)
  seed: int = 0  # parameter init and batch order
  log_every: int = 50  # progress line + metrics.jsonl row every N steps
  eval_every: int = 250  # held-out loss every N steps (and at the end)
  eval_batches: int = 4  # batches averaged for the held-out loss
  checkpoint_every: int = 500  # orbax checkpoint every N steps (and at the end)
  keep_checkpoints: int = 3  # the last N checkpoints are kept
  fsdp: int = 1  # devices per FSDP group; the mesh is (n_devices / fsdp) x fsdp
  skip_nonfinite: bool = False  # skip steps with a non-finite loss instead of stopping

  def __post_init__(self):
    for name in ("steps", "batch_size", "seq_len", "log_every", "eval_every", "eval_batches",
                 "checkpoint_every", "keep_checkpoints", "fsdp"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")

  # Fields that may change when a run is resumed (they do not change what is computed).
  RESUMABLE_CHANGES = ("log_every", "eval_every", "eval_batches", "checkpoint_every",
                       "keep_checkpoints")


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss). The message names the step."""


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def config_differences(saved: dict, current: dict) -> list[str]:
  """Dotted names of fields that differ, ignoring those a resumed run may change."""
  out = []
  for section in sorted(set(saved) | set(current)):
    a, b = saved.get(section, {}), current.get(section, {})
    for key in sorted(set(a) | set(b)):
      if section == "train" and key in LoopConfig.RESUMABLE_CHANGES:
        continue
      if a.get(key) != b.get(key):
        out.append(f"{section}.{key} ({a.get(key)!r} -> {b.get(key)!r})")
  return out


def _check_workdir(workdir: str) -> bool:
  """Creates the workdir if needed; returns whether it existed. Raises if it is not writable."""
  existed = os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"workdir {workdir} is not writable ({e.strerror or e})") from None
  return existed


def _check_vocab(cfg: RunConfig, vocab_size: int) -> None:
  if cfg.model.vocab_size != vocab_size:
    raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} does not match the tokenizer's "
                      f"{vocab_size} tokens")


def train(cfg: RunConfig, workdir: str, *, progress: Callable[[str], None] = print,
          allow_config_change: bool = False) -> dict:
  """Trains (or resumes) the run in ``workdir``; returns the last logged metrics."""
  workdir = os.path.abspath(workdir)
  data_lib.check_sources(cfg.data)
  if cfg.data.tokenizer in ("bpe", "bytes"):  # the vocabulary is known before building anything
    _check_vocab(cfg, cfg.data.bpe_vocab_size if cfg.data.tokenizer == "bpe" else 257)
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      saved = json.load(f)
    diff = config_differences(saved, cfg.to_dict())
    if diff and not allow_config_change:
      raise ConfigError(f"the config differs from the one saved in {config_path}: "
                        f"{'; '.join(diff)}. Use another --workdir, or pass "
                        "--allow_config_change to resume with the new values")
  existed = _check_workdir(workdir)
  data_dir = os.path.join(workdir, "data")
  data_existed = os.path.exists(os.path.join(data_dir, data_lib.MANIFEST))
  t0 = time.time()
  try:
    dataset = data_lib.prepare(cfg.data, data_dir, progress)
    _check_vocab(cfg, dataset.tokenizer.vocab_size)
  except Exception:
    if not data_existed:  # leave nothing half-built behind
      shutil.rmtree(data_dir, ignore_errors=True)
      if not existed and not os.listdir(workdir):
        os.rmdir(workdir)
    raise
  progress(f"data: {sum(map(len, dataset.train)):,} train / {sum(map(len, dataset.eval)):,} "
           f"held-out tokens, tokenizer {dataset.tokenizer.name} ({time.time() - t0:.1f}s)")
  if not os.path.exists(config_path) or allow_config_change:
    atomic_write_json(config_path, cfg.to_dict(), indent=2, sort_keys=True)
  return _run(cfg, workdir, dataset, progress)


def _run(cfg: RunConfig, workdir: str, dataset: data_lib.Dataset, progress) -> dict:
  loop = cfg.train
  mesh = distributed.make_mesh(loop.fsdp)
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, loop.steps)
  lr = optim.learning_rate_schedule(cfg.optim, cfg.sparsity, loop.steps)
  graphdef, state = train_step.create_train_state(cfg.model, tx, seed=loop.seed, mesh=mesh)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=loop.keep_checkpoints)
  start = 0
  if checkpointer.latest_step() is not None:
    state, meta = checkpointer.restore(state)
    start = int(meta["step"])
    progress(f"resuming from the checkpoint at step {start}")
  _truncate_metrics(workdir, start)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  progress(f"model: {n_params:,} parameters, {cfg.model.n_layer} layers, d_model "
           f"{cfg.model.d_model}; sparsity {'on' if cfg.sparsity.enabled else 'off'} (target "
           f"density {cfg.sparsity.target_density:g}); mesh {dict(mesh.shape)}")

  sampler = data_lib.BatchSampler(dataset.train, batch_size=loop.batch_size, seq_len=loop.seq_len,
                                   seed=loop.seed, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  eval_sampler = data_lib.BatchSampler(dataset.eval, batch_size=loop.batch_size,
                                       seq_len=loop.seq_len, seed=loop.seed + 1,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())
  eval_batches = [distributed.global_batch(eval_sampler.batch(i), mesh)
                  for i in range(loop.eval_batches)]
  step_fn = train_step.make_train_step(graphdef, tx, sparsity=cfg.sparsity,
                                       total_steps=loop.steps, learning_rate=lr, mesh=mesh,
                                       state=state, skip_nonfinite=loop.skip_nonfinite)
  eval_fn = train_step.make_eval_step(graphdef)

  def evaluate(state) -> float:
    return float(np.mean([eval_fn(state.params, state.buffers, b) for b in eval_batches]))

  # First step (1-based) whose loss was not finite, tracked on device: -1 while all are finite.
  first_bad = jnp.int32(-1)
  track_bad = jax.jit(lambda bad, loss, done: jnp.where((bad < 0) & ~jnp.isfinite(loss), done,
                                                        bad))
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  logger = _ProgressLogger(loop, writer, progress, start)
  last_saved = start
  pending = None  # (steps done, metrics on device, held-out loss or None) of the previous step
  try:
    for step in range(start, loop.steps):
      state, metrics = step_fn(state, distributed.global_batch(sampler.batch(step), mesh))
      done = step + 1
      if not loop.skip_nonfinite:
        first_bad = track_bad(first_bad, metrics["loss"], done)
      # The previous step's metrics are read only now that this step is queued: no host sync in
      # the loop except to evaluate and checkpoint, which need this step's parameters.
      if pending is not None:
        logger.log(*pending)
      checkpoint = done % loop.checkpoint_every == 0 or done == loop.steps
      if (checkpoint or done % loop.eval_every == 0) and int(first_bad) >= 0:
        raise FloatingPointError(f"non-finite loss at step {int(first_bad)}")
      eval_loss = evaluate(state) if done % loop.eval_every == 0 or done == loop.steps else None
      if checkpoint:
        checkpointer.save(done, state, {"step": done})
        last_saved = done
      pending = (done, metrics, eval_loss)
    last = logger.log(*pending, force=True) if pending is not None else {}
  except FloatingPointError as e:
    raise TrainingError(f"{e}; the last good checkpoint is step {last_saved} in "
                        f"{checkpointer.directory}") from None
  finally:
    writer.close()
    checkpointer.close()
  if start >= loop.steps:
    progress(f"nothing to do: the checkpoint is already at step {start} of {loop.steps}")
    return {}
  progress(f"done: steps {start}..{loop.steps} in {format_duration(time.time() - logger.start)};"
           f" final loss {last['loss']:.4f}, held-out loss {last['eval_loss']:.4f}")
  return last


def _truncate_metrics(workdir: str, step: int) -> None:
  """Drops metrics rows after ``step`` (logged by a run that died before its next checkpoint)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  atomic_write(path, "".join(rows))


class _ProgressLogger:
  """Writes metrics rows and progress lines at the logging interval, with tokens/s and ETA."""

  def __init__(self, loop, writer: MetricWriter, progress: Callable[[str], None], start: int):
    self.loop, self.writer, self.progress = loop, writer, progress
    self.start = self.window_start = time.time()
    self.first = self.window_first = start  # steps done when timing started / the window started

  def log(self, done: int, metrics, eval_loss: float | None, force: bool = False) -> dict | None:
    loop = self.loop
    if done % loop.log_every and eval_loss is None and not force:
      return None
    row = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.time()
    row["tokens_per_sec"] = ((done - self.window_first) * loop.batch_size * loop.seq_len
                             / max(now - self.window_start, 1e-9))
    self.window_start, self.window_first = now, done
    if eval_loss is not None:
      row["eval_loss"] = eval_loss
    if not np.isfinite(row["loss"]) and not loop.skip_nonfinite:
      raise FloatingPointError(f"non-finite loss {row['loss']} at step {done}")
    self.writer.write(done, row)
    eta = (loop.steps - done) * (now - self.start) / max(done - self.first, 1)
    self.progress(
        f"step {done}/{loop.steps} | loss {row['loss']:.4f}"
        + (f" | eval {eval_loss:.4f}" if eval_loss is not None else "")
        + f" | lr {row.get('lr', 0.0):.2e} | L0 {row['l0_fraction']:.2%} (hidden "
        f"{row['density']:.2%}) | {row['tokens_per_sec']:,.0f} tok/s | ETA {format_duration(eta)}"
        + (f" | skipped {int(row['skipped'])}" if row.get("skipped") else ""))
    return row
