"""Scoring a model on the tasks: the official task loss and accuracy per task."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.tasks import generators as tasks_lib
from sparsejax.tasks.batch import encode_pairs
from sparsejax.model.gpt import merge


def task_batches(names: Sequence[str], tokenizer, *, n_pairs: int, split: str, seed: int = 0,
                 max_len: int | None = None, pad_multiple: int = 16) -> dict:
  """{task: TaskBatch}, all padded to one length (a multiple of ``pad_multiple``)."""
  out = {name: encode_pairs(tasks_lib.get_task(name),
                                      tasks_lib.get_task(name).pairs(n_pairs, split=split,
                                                                     seed=seed),
                                      tokenizer, max_len=max_len) for name in names}
  T = max(b.seq_len for b in out.values())
  T = -(-T // pad_multiple) * pad_multiple
  if max_len is not None:
    T = min(T, max_len)
  return {name: b.pad_to(T) for name, b in out.items()}


def pair_loss(logits_last_NSV, correct_NS, alt_NS):
  """The official task loss and accuracy from last-position logits (N pairs, S = 2 sequences).

  Per sequence: binary cross-entropy over just the two candidate tokens,
  ``-log softmax([l_correct, l_alt])[0] = softplus(l_alt - l_correct)``; the loss is the mean over
  sequences (both sequences of each pair, then pairs). Written with plain jnp ops so it can be
  vmapped over tasks. Returns (loss per sequence (N, S), correct-is-preferred (N, S)).
  """
  l_c = jnp.take_along_axis(logits_last_NSV, correct_NS[..., None], axis=-1)[..., 0]
  l_a = jnp.take_along_axis(logits_last_NSV, alt_NS[..., None], axis=-1)[..., 0]
  return jax.nn.softplus(l_a - l_c), (l_c > l_a)


@functools.partial(jax.jit, static_argnums=0)
def _score(graphdef, params, buffers, tokens_NST, last_NS, correct_NS, alt_NS):
  model = merge(graphdef, params, buffers)
  N, S, T = tokens_NST.shape
  logits = model(tokens_NST.reshape(N * S, T), positions_B=last_NS.reshape(N * S))
  loss, right = pair_loss(logits.reshape(N, S, -1), correct_NS, alt_NS)
  return loss, right


def evaluate(graphdef, params, buffers, batches: dict, *, chunk: int = 64) -> dict:
  """{task: {"loss", "accuracy", "pairs"}} with the official per-sequence binary loss."""
  results = {}
  for name, b in batches.items():
    losses, rights = [], []
    for start in range(0, len(b.tokens), chunk):
      sl = slice(start, start + chunk)
      tok, last, cor, alt = b.tokens[sl], b.last[sl], b.correct[sl], b.alt[sl]
      n = len(tok)
      if n < chunk:  # pad the chunk so every call has one shape (one compile)
        pad = ((0, chunk - n),) + ((0, 0),) * (tok.ndim - 1)
        tok, last = np.pad(tok, pad), np.pad(last, pad[:2])
        cor, alt = np.pad(cor, pad[:2]), np.pad(alt, pad[:2])
      loss, right = _score(graphdef, params, buffers, jnp.asarray(tok), jnp.asarray(last),
                           jnp.asarray(cor), jnp.asarray(alt))
      losses.append(np.asarray(loss)[:n])
      rights.append(np.asarray(right)[:n])
    loss, right = np.concatenate(losses), np.concatenate(rights)
    results[name] = {"loss": float(loss.mean()), "accuracy": float(right.mean()),
                     "pairs": int(len(loss))}
  return results


def format_table(results: dict, target_loss: float = 0.15) -> str:
  lines = [f"{'task':<28} {'loss':>8} {'accuracy':>9} {'pairs':>6}  solved (loss <= "
           f"{target_loss})"]
  for name, r in results.items():
    lines.append(f"{name:<28} {r['loss']:>8.4f} {r['accuracy']:>9.3f} {r['pairs']:>6}  "
                 f"{'yes' if r['loss'] <= target_loss else 'no'}")
  solved = sum(r["loss"] <= target_loss for r in results.values())
  lines.append(f"solved: {solved} of {len(results)} tasks")
  return "\n".join(lines)
