"""The training loop behind ``experiments/train.py``.

Builds the tokenizer, the token streams, the model and the sparse optimizer from a
:class:`~sparsejax.run_config.RunConfig`, then runs the jitted step with metrics of step t read
only after step t + 1 is dispatched (no host sync in the loop), a progress line with loss, tokens/s,
L0 and ETA, held-out loss at an interval, and ``metrics.jsonl`` + ``config.json`` in the workdir.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
import numpy as np

from sparsejax import corpus, data as data_lib, optim, train_step
from sparsejax.config import ConfigError
from sparsejax.metrics import MetricWriter
from sparsejax.run_config import RunConfig
from sparsejax.tokenizer import ByteTokenizer, Tokenizer

# Held-out documents come from the same generator with a disjoint document range.
_EVAL_DOC_OFFSET = 1 << 30


def make_tokenizer(cfg: RunConfig) -> Tokenizer:
  if cfg.data.tokenizer == "bytes":
    return ByteTokenizer()
  raise ConfigError(f"data.tokenizer: unknown tokenizer {cfg.data.tokenizer!r}")


def build_streams(cfg: RunConfig, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(train tokens, held-out tokens) of the configured corpus."""
  d = cfg.data
  if d.source == "builtin":
    train = data_lib.build_token_stream(corpus.iter_documents(d.seed), tokenizer, d.train_tokens)
    held = data_lib.build_token_stream(corpus.iter_documents(d.seed, start=_EVAL_DOC_OFFSET),
                                       tokenizer, d.eval_tokens)
    return train, held
  raise ConfigError(f"data.source: unknown source {d.source!r}")


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def train(cfg: RunConfig, workdir: str, *, progress: Callable[[str], None] = print) -> dict:
  """Trains from scratch; returns the last logged metrics (with ``eval_loss``)."""
  os.makedirs(workdir, exist_ok=True)
  tokenizer = make_tokenizer(cfg)
  if cfg.model.vocab_size != tokenizer.vocab_size:
    raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} does not match the "
                      f"{tokenizer.name} tokenizer's {tokenizer.vocab_size} tokens")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(cfg.to_dict(), f, indent=2, sort_keys=True)

  t0 = time.time()
  train_tokens, eval_tokens = build_streams(cfg, tokenizer)
  progress(f"data: {len(train_tokens):,} train / {len(eval_tokens):,} held-out tokens "
           f"({tokenizer.name}, {time.time() - t0:.1f}s)")
  loop = cfg.train
  sampler = data_lib.BatchSampler(train_tokens, batch_size=loop.batch_size, seq_len=loop.seq_len,
                                  seed=loop.seed, process_index=jax.process_index(),
                                  process_count=jax.process_count())
  eval_sampler = data_lib.BatchSampler(eval_tokens, batch_size=loop.batch_size,
                                       seq_len=loop.seq_len, seed=loop.seed + 1)
  eval_batches = [eval_sampler.batch(i) for i in range(loop.eval_batches)]

  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, loop.steps)
  lr = optim.learning_rate_schedule(cfg.optim, cfg.sparsity, loop.steps)
  graphdef, state = train_step.create_train_state(cfg.model, tx, seed=loop.seed)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  progress(f"model: {n_params:,} parameters, {cfg.model.n_layer} layers, d_model "
           f"{cfg.model.d_model}; sparsity {'on' if cfg.sparsity.enabled else 'off'} "
           f"(target density {cfg.sparsity.target_density:g})")
  step_fn = train_step.make_train_step(graphdef, tx, sparsity=cfg.sparsity,
                                       total_steps=loop.steps, learning_rate=lr)
  eval_fn = train_step.make_eval_step(graphdef)

  def evaluate(state) -> float:
    return float(np.mean([eval_fn(state.params, state.buffers, b) for b in eval_batches]))

  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  logger = _ProgressLogger(loop, writer, progress)
  pending = None  # (steps done, metrics on device, held-out loss or None) of the previous step
  try:
    for step in range(loop.steps):
      state, metrics = step_fn(state, sampler.batch(step))
      done = step + 1
      # The previous step's metrics are read only now that this step is queued: no host sync in
      # the loop (except at evaluations, which need this step's parameters).
      if pending is not None:
        logger.log(*pending)
      eval_loss = evaluate(state) if done % loop.eval_every == 0 or done == loop.steps else None
      pending = (done, metrics, eval_loss)
    last = logger.log(*pending)
  finally:
    writer.close()
  progress(f"done: {loop.steps} steps in {format_duration(time.time() - logger.start)}; final "
           f"loss {last['loss']:.4f}, held-out loss {last['eval_loss']:.4f}")
  return last


class _ProgressLogger:
  """Writes metrics rows and progress lines at the logging interval, with tokens/s and ETA."""

  def __init__(self, loop, writer: MetricWriter, progress: Callable[[str], None]):
    self.loop, self.writer, self.progress = loop, writer, progress
    self.start = self.window_start = time.time()
    self.window_first = 0  # steps done when the current timing window started

  def log(self, done: int, metrics, eval_loss: float | None) -> dict | None:
    loop = self.loop
    if done % loop.log_every and eval_loss is None:
      return None
    row = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.time()
    row["tokens_per_sec"] = ((done - self.window_first) * loop.batch_size * loop.seq_len
                             / max(now - self.window_start, 1e-9))
    self.window_start, self.window_first = now, done
    if eval_loss is not None:
      row["eval_loss"] = eval_loss
    if not np.isfinite(row["loss"]):
      raise FloatingPointError(f"non-finite loss {row['loss']} at step {done}")
    self.writer.write(done, row)
    eta = (loop.steps - done) * (now - self.start) / done
    self.progress(
        f"step {done}/{loop.steps} | loss {row['loss']:.4f}"
        + (f" | eval {eval_loss:.4f}" if eval_loss is not None else "")
        + f" | lr {row.get('lr', 0.0):.2e} | L0 {row['l0_fraction']:.2%} (hidden "
        f"{row['density']:.2%}) | {row['tokens_per_sec']:,.0f} tok/s | ETA {format_duration(eta)}")
    return row
