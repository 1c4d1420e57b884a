"""The training loop behind ``experiments/train.py``.

``train(cfg, workdir)`` makes the run directory self-describing and resumable::

  workdir/config.json      the RunConfig (a resumed run must match it, see below)
  workdir/data/            tokenizer, token shards and their manifest (sparsejax.data)
  workdir/checkpoints/     orbax checkpoints: state + step (async, atomic, last N kept)
  workdir/metrics.jsonl    one JSON object per logged step
  workdir/tensorboard/     events, when tensorboardX is installed
  workdir/.lock            held (flock) by the one process training in the directory

Starting on a workdir that has checkpoints resumes from the newest one that restores (a damaged
one is moved to ``checkpoints-damaged/``); the batches of step s are a pure function of (seed, s,
process), so the resumed run computes exactly what an uninterrupted run would. A config that
differs from the saved one (other than logging / checkpoint cadence) is refused unless
``allow_config_change``, and ``config.json`` changes only after the checkpoint was restored with
the new config. Everything checkable is checked before the first write. The loop never syncs with
the host except to log, evaluate and checkpoint; a non-finite loss stops the run naming the step,
without checkpointing past the last finite one (or, with ``train.skip_nonfinite``, the step's
update is dropped and counted). Ctrl-C saves a checkpoint of the last finished step, then raises
:class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data import dataset as data_lib
from sparsejax.train import distributed
from sparsejax.sparse import optim
from sparsejax.train import step as train_step
from sparsejax.train.checkpoint import Checkpointer, IncompatibleCheckpointError
from sparsejax.train.metrics import METRICS_FILE, MetricWriter, read_metrics
from sparsejax.utils.errors import ConfigError, FileFormatError, PathError, UserError
from sparsejax.utils.files import (LOCK_FILE, atomic_write, atomic_write_json, lock_directory,
                                   make_dir, read_json)

CONFIG_FILE = "config.json"

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
        raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")

  # Fields that may change when a run is resumed (they do not change what is computed).
  RESUMABLE_CHANGES = ("log_every", "eval_every", "eval_batches", "checkpoint_every",
                       "keep_checkpoints")


class TrainingError(UserError):
  """Training cannot go on (a non-finite loss, a full disk). The message names the step and the
  last good checkpoint."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C stopped training after saving a checkpoint; the message says so (exit code 130)."""


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


def _check_vocab(cfg: RunConfig, vocab_size: int) -> None:
  if cfg.model.vocab_size != vocab_size:
    raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} does not match the tokenizer's "
                      f"{vocab_size} tokens")


def check_devices(cfg: RunConfig, n_devices: int | None = None) -> None:
  """The mesh is (n_devices / fsdp) x fsdp and every batch is split over all devices: both must
  divide evenly. Checked before anything is written."""
  n = jax.device_count() if n_devices is None else n_devices
  if n % cfg.train.fsdp:
    raise ConfigError(f"train.fsdp: {cfg.train.fsdp} does not divide the {n} devices (the mesh "
                      f"is devices / fsdp x fsdp)")
  if cfg.train.batch_size % n:
    raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the {n} "
                      "devices (each device takes an equal share of every batch)")


def read_saved_config(path: str) -> dict | None:
  """The ``config.json`` of a run (None if there is none); a file that is not a config object is
  a :class:`FileFormatError` naming it."""
  if not os.path.exists(path):
    return None
  saved = read_json(path, "the run's config (a JSON object with sections model, sparsity, ...)")
  if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
    raise FileFormatError(f"{path}: expected a JSON object of config sections, got "
                          f"{type(saved).__name__ if not isinstance(saved, dict) else 'other'}")
  return saved


def train(cfg: RunConfig, workdir: str, *, progress: Callable[[str], None] = print,
          allow_config_change: bool = False) -> dict:
  """Trains (or resumes) the run in ``workdir``; returns the last logged metrics.

  Everything that can be checked without writing is checked first (sources, vocabulary, devices);
  then the workdir is locked against a second trainer, and ``config.json`` is (re)written only once
  the checkpoint to resume from has been restored.
  """
  workdir = os.path.abspath(workdir)
  data_lib.check_sources(cfg.data)
  if cfg.data.tokenizer in ("bpe", "bytes"):  # the vocabulary is known before building anything
    _check_vocab(cfg, cfg.data.bpe_vocab_size if cfg.data.tokenizer == "bpe" else 257)
  check_devices(cfg)
  lead = jax.process_index() == 0  # on a pod every process opens the workdir; one locks it
  existed = make_dir(workdir, "workdir")
  with (lock_directory(workdir) if lead else contextlib.nullcontext(True)) as locked:
    if not locked:
      progress(f"warning: {workdir} cannot be locked (the filesystem has no locks): make sure no "
               "other process trains in it")
    config_path = os.path.join(workdir, CONFIG_FILE)
    saved = read_saved_config(config_path)
    diff = config_differences(saved, cfg.to_dict()) if saved is not None else []
    if diff and not allow_config_change:
      raise ConfigError(f"the config differs from the one saved in {config_path}: "
                        f"{'; '.join(diff)}. Use another --workdir, or pass "
                        "--allow_config_change to resume with the new values")
    dataset = _prepare_data(cfg, workdir, progress, run_started=saved is not None, lead=lead,
                            created_workdir=not existed)
    write_config = saved is None or (bool(diff) and allow_config_change)
    return _run(cfg, workdir, dataset, progress, write_config=write_config, changes=diff)


def _prepare_data(cfg: RunConfig, workdir: str, progress, *, run_started: bool, lead: bool,
                  created_workdir: bool) -> data_lib.Dataset:
  """The run's dataset, built if needed. What this process builds and cannot finish is removed."""
  data_dir = os.path.join(workdir, "data")
  manifest = os.path.join(data_dir, data_lib.MANIFEST)
  if lead and not run_started and os.path.exists(manifest) and not data_lib.built_with(
      data_dir, cfg.data):
    # No config.json: no run ever started here, so the data is what an earlier failed attempt
    # built. It is rebuilt for the corrected config rather than blocking it.
    progress(f"data: rebuilding {data_dir} (built with another data config by an attempt that "
             "never started training)")
    shutil.rmtree(data_dir)
  data_existed = os.path.exists(manifest)
  t0 = time.time()
  try:
    dataset = data_lib.prepare(cfg.data, data_dir, progress)
    _check_vocab(cfg, dataset.tokenizer.vocab_size)
    window = cfg.train.seq_len + 1
    for split, shards, field in (("train", dataset.train, "train_tokens"),
                                 ("held-out", dataset.eval, "eval_tokens")):
      if max(map(len, shards)) <= window:
        raise ConfigError(f"data.{field}: the {split} split holds {sum(map(len, shards)):,} "
                          f"tokens, not more than one window of train.seq_len + 1 = {window}")
  except BaseException:
    if lead and not data_existed:  # leave nothing half-built behind
      shutil.rmtree(data_dir, ignore_errors=True)
      if created_workdir and set(os.listdir(workdir)) <= {LOCK_FILE}:
        shutil.rmtree(workdir, ignore_errors=True)
    raise
  progress(f"data: {sum(map(len, dataset.train)):,} train / {sum(map(len, dataset.eval)):,} "
           f"held-out tokens, tokenizer {dataset.tokenizer.name} ({time.time() - t0:.1f}s)")
  return dataset


def _run(cfg: RunConfig, workdir: str, dataset: data_lib.Dataset, progress, *,
         write_config: bool, changes: list[str]) -> dict:
  loop = cfg.train
  mesh = distributed.make_mesh(loop.fsdp)
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, loop.steps)
  lr = optim.learning_rate_schedule(cfg.optim, cfg.sparsity, loop.steps)
  graphdef, state = train_step.create_train_state(cfg.model, tx, seed=loop.seed, mesh=mesh)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=loop.keep_checkpoints)
  writer = None
  failed = True
  try:
    start = 0
    if checkpointer.all_steps():
      try:
        state, meta = checkpointer.restore(state, note=progress)
      except IncompatibleCheckpointError as e:
        change = (f"--allow_config_change cannot resume after changing {', '.join(changes)}"
                  if changes else "the config does not describe this run")
        raise IncompatibleCheckpointError(f"{e}: {change}; use another --workdir") from None
      start = int(meta["step"])
      progress(f"resuming from the checkpoint at step {start}")
    if write_config:  # only now: a config that cannot resume its checkpoints is never saved
      atomic_write_json(os.path.join(workdir, CONFIG_FILE), cfg.to_dict(), indent=2,
                        sort_keys=True)
    _truncate_metrics(workdir, start)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    last = _loop(cfg, graphdef, state, tx, lr, mesh, dataset, checkpointer, writer, progress,
                 start)
    checkpointer.wait()
    failed = False
  finally:
    if writer is not None:
      writer.close()
    checkpointer.close(quiet=failed)
  if start >= loop.steps:
    progress(f"nothing to do: the checkpoint is already at step {start} of {loop.steps}")
    return {}
  return last


def _loop(cfg: RunConfig, graphdef, state, tx, lr, mesh, dataset, checkpointer: Checkpointer,
          writer: MetricWriter, progress, start: int) -> dict:
  """Steps ``start`` .. ``train.steps`` with logging, evaluation and checkpoints."""
  loop = cfg.train
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

  def last_good() -> str:
    return (f"the last good checkpoint is step {checkpointer.last_good} in "
            f"{checkpointer.directory}" if checkpointer.last_good is not None
            else "no checkpoint was written yet")

  # First step (1-based) whose loss was not finite, tracked on device: -1 while all are finite.
  first_bad = jnp.int32(-1)
  track_bad = jax.jit(lambda bad, loss, done: jnp.where((bad < 0) & ~jnp.isfinite(loss), done,
                                                        bad))
  logger = _ProgressLogger(loop, writer, progress, start)
  pending = None  # (steps done, metrics on device, held-out loss or None) of the previous step
  done = start
  with _CtrlC() as ctrl_c:
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
        checkpoint = (done % loop.checkpoint_every == 0 or done == loop.steps
                      or ctrl_c.pressed)
        if (checkpoint or done % loop.eval_every == 0) and int(first_bad) >= 0:
          raise FloatingPointError(f"non-finite loss at step {int(first_bad)}")
        eval_loss = evaluate(state) if done % loop.eval_every == 0 or done == loop.steps else None
        if checkpoint:
          checkpointer.save(done, state, {"step": done})
        pending = (done, metrics, eval_loss)
        if ctrl_c.pressed and done < loop.steps:
          break
      last = logger.log(*pending, force=True) if pending is not None else {}
      if ctrl_c.pressed and done < loop.steps:
        checkpointer.wait()
        raise Interrupted(f"interrupted at step {done} (checkpoint saved in "
                          f"{checkpointer.directory}); run the same command to resume")
    except FloatingPointError as e:
      checkpointer.wait()  # the save of the last finite step may still be running
      raise TrainingError(f"{e}; {last_good()}") from None
    except PathError as e:  # metrics.jsonl could not be written (a full disk)
      raise TrainingError(f"{e}; {last_good()}") from None
  if done > start:
    progress(f"done: steps {start}..{loop.steps} in "
             f"{format_duration(time.time() - logger.start)}; final loss {last['loss']:.4f}, "
             f"held-out loss {last['eval_loss']:.4f}")
  return last


class _CtrlC:
  """Turns the first Ctrl-C (SIGINT) during training into a flag the loop checks after each step,
  so that it can save a checkpoint of consistent state (a KeyboardInterrupt raised inside the
  donated train step could leave no state to save). A second Ctrl-C interrupts at once. Only in
  the main thread of a single-process run: on a pod, every process would have to agree to stop.
  """

  def __init__(self):
    self.pressed = False
    self._previous = None

  def __enter__(self) -> "_CtrlC":
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.pressed:
      raise KeyboardInterrupt
    self.pressed = True

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)


def _truncate_metrics(workdir: str, step: int) -> None:
  """Drops metrics rows after ``step`` (logged by a run that died before its next checkpoint) and
  a partial last line (a write cut short)."""
  path = os.path.join(workdir, METRICS_FILE)
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  rows = [r for r in read_metrics(workdir) if r["step"] <= step]
  atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


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
