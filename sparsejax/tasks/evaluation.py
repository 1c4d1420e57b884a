"""Scoring a model on the tasks: the official task loss and accuracy per task and split.

:func:`evaluate_run` scores a trained run on the "test" split (same templates as the pairs pruning
trains on, other pairs) and the "ood" split (held-out names, literals, statements, longer contexts
and distractors, none of them in the corpus): a task the model solves on test but not on ood was
learned as a template, not as the idiom. "Solved" means test loss at or below the target.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.model.gpt import merge
from sparsejax.tasks import generators as tasks_lib
from sparsejax.tasks import registry
from sparsejax.tasks.batch import TaskBatch, encode_pairs

EVAL_SPLITS = ("test", "ood")  # the splits a task table reports; the first decides "solved"


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Whether a task is solved, and the number that decided it."""

  solved: bool
  split: str  # the split whose loss decided (the worst of those judged)
  loss: float
  target: float

  def __bool__(self) -> bool:
    return self.solved

  def __str__(self) -> str:
    return (f"{'solved' if self.solved else 'not solved'} ({self.split} loss {self.loss:.4f} "
            f"{'<=' if self.solved else '>'} target {self.target:g})")


def solved(losses: Mapping[str, float], target: float) -> Verdict:
  """The one definition of "solved" every stage uses: the task loss is at most ``target`` on every
  held-out split the stage judges on, ``losses`` = {split: loss}. The task table judges on its
  first split (test: same templates as training, other pairs; ood is reported, not judged);
  pruning on its validation pairs (the circuit search needs the full model at the target there)
  and its test pairs. The worst split decides, and is the one printed."""
  if not losses:
    raise ValueError("solved: no losses to judge")
  split = max(losses, key=lambda k: losses[k])
  loss = float(losses[split])
  return Verdict(loss <= target, split, loss, float(target))


def task_batch(name: str, tokenizer, *, n_pairs: int = 64, split: str = "test", seed: int = 0,
               max_len: int | None = None) -> TaskBatch:
  """The first ``n_pairs`` pairs of task ``name``'s ``split`` (pure functions of ``seed``),
  tokenized and checked (:func:`~sparsejax.tasks.batch.encode_pairs`); contexts longer than
  ``max_len`` (e.g. the model's block_size) keep their last tokens."""
  task = tasks_lib.get_task(name)
  return encode_pairs(task, task.pairs(n_pairs, split=split, seed=seed), tokenizer,
                      max_len=max_len)


def task_batches(names: Sequence[str], tokenizer, *, n_pairs: int, split: str, seed: int = 0,
                 max_len: int | None = None, pad_multiple: int = 16) -> dict:
  """{task: TaskBatch}, all padded to one length (a multiple of ``pad_multiple``)."""
  out = {name: task_batch(name, tokenizer, n_pairs=n_pairs, split=split, seed=seed,
                          max_len=max_len) for name in names}
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


def pair_logits(model, tokens_NST, last_NS, *, interventions=None):
  """Logits (N, S, V) at each sequence's scored position (``last``), with optional interventions.

  The pairs run as one batch of N * S sequences, sequence ``S * n + s`` being side s of pair n:
  an intervention whose value has a batch axis (activation patching) is laid out that way,
  (N * S, T, width).
  """
  N, S, T = tokens_NST.shape
  logits = model(tokens_NST.reshape(N * S, T), interventions=interventions,
                 positions_B=last_NS.reshape(N * S))
  return logits.reshape(N, S, -1)


def task_loss(model, batch: TaskBatch, *, interventions=None) -> jax.Array:
  """The official task loss (:func:`pair_loss`, mean over both sequences of every pair) of
  ``model`` on ``batch``, under ``interventions`` ({site: Intervention}, the model's own
  mechanism: ablation, mean ablation, patching; see :mod:`sparsejax.model.sites`).

  A pure function of arrays (no host round trip): ``jax.jit`` it, ``jax.grad`` it with respect to
  a mask, or ``jax.vmap`` it over a stack of masks. All pairs run in one call; for large batches
  :func:`evaluate` scores in fixed-shape chunks instead.
  """
  logits = pair_logits(model, jnp.asarray(batch.tokens), jnp.asarray(batch.last),
                       interventions=interventions)
  loss, _ = pair_loss(logits, jnp.asarray(batch.correct), jnp.asarray(batch.alt))
  return loss.mean()


@functools.partial(jax.jit, static_argnums=0)
def _score(graphdef, params, buffers, tokens_NST, last_NS, correct_NS, alt_NS):
  logits = pair_logits(merge(graphdef, params, buffers), tokens_NST, last_NS)
  return pair_loss(logits, correct_NS, alt_NS)


def evaluate(graphdef, params, buffers, batches: dict, *, chunk: int = 64,
             bucket: int = 32, progress: Callable[[str], None] = lambda _: None,
             every_seconds: float = 10.0) -> dict:
  """{task: {"loss", "accuracy", "pairs"}} with the official per-sequence binary loss.

  Pairs are scored shortest first, ``chunk`` pairs per call, each call cut to its longest context
  rounded up to a multiple of ``bucket`` (causal attention: the padding after a sequence's last
  token cannot change its logits). Calls thus have at most seq_len / bucket shapes (compiles),
  and a split of mostly short contexts does not pay for its longest one. ``progress`` hears how
  many tasks are done at most every ``every_seconds``.
  """
  results = {}
  began = last_line = time.time()
  for i, (name, b) in enumerate(batches.items()):
    if i and time.time() - last_line >= every_seconds:
      progress(f"eval: {i}/{len(batches)} tasks scored ({time.time() - began:.0f}s)")
      last_line = time.time()
    losses, rights = [], []
    order = np.argsort(b.last.max(axis=1), kind="stable")
    for start in range(0, len(order), chunk):
      idx = order[start:start + chunk]
      T = min(b.seq_len, -(-(int(b.last[idx].max()) + 1) // bucket) * bucket)
      tok, last, cor, alt = b.tokens[idx, :, :T], b.last[idx], b.correct[idx], b.alt[idx]
      n = len(tok)
      if n < chunk:  # pad the chunk so calls of one length have one shape (one compile)
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


def evaluate_run(run, names: Sequence[str], *, pairs: int = 200,
                 splits: Sequence[str] = EVAL_SPLITS, seed: int = 0,
                 progress: Callable[[str], None] = lambda _: None) -> dict:
  """Scores a loaded run (``sparsejax.train.runs.load_run``) on each split.

  Returns {task: {"loss", "accuracy", "pairs"} of the first split (the one that decides "solved"),
  plus {split: {"loss", "accuracy", "pairs"}} for every split and "flags" (the task's flags)}.
  """
  if not splits:
    raise ValueError("evaluate_run: no splits to score")
  per_split = {}
  for split in splits:
    progress(f"eval: {len(names)} tasks x {pairs} {split} pairs")
    t0 = time.time()
    batches = task_batches(names, run.tokenizer, n_pairs=pairs, split=split, seed=seed,
                           max_len=run.config.model.block_size)
    per_split[split] = evaluate(run.graphdef, run.params, run.buffers, batches,
                                progress=progress)
    progress(f"eval: {split} done ({time.time() - t0:.1f}s)")
  results = {}
  for name in names:
    results[name] = dict(per_split[splits[0]][name],
                         flags=sorted(tasks_lib.get_task(name).flags),
                         **{split: per_split[split][name] for split in splits})
  return results


def verdict_of(result: dict, target: float) -> Verdict:
  """:func:`solved` for one task's row of :func:`evaluate_run` (judged on its first split)."""
  first = next((k for k, v in result.items() if isinstance(v, dict)), "loss")
  return solved({first: result["loss"]}, target)


def splits_of(results: dict) -> list[str]:
  """The splits scored in ``results`` (from :func:`evaluate_run`), in the order scored."""
  first = next(iter(results.values()), {})
  return [k for k, v in first.items() if isinstance(v, dict)]


def report(step: int, results: dict, target_loss: float) -> dict:
  """The JSON document of a task evaluation (``task_eval.json``)."""
  splits = splits_of(results)
  return {"step": step, "split": splits[0] if splits else None, "splits": splits,
          "target_loss": target_loss,
          "flags": {f: registry.FLAGS[f] for r in results.values() for f in r.get("flags", [])},
          "tasks": results}


def format_table(results: dict, target_loss: float = 0.15) -> str:
  """One line per task: loss and accuracy on every split, solved (first split), flags."""
  splits = splits_of(results) or [None]
  head = f"{'task':<28}"
  for split in splits:
    label = split or "all"
    head += f" {label + ' loss':>10} {'acc':>6}"
  lines = [head + f" {'pairs':>6}  solved ({splits[0] or 'loss'} loss <= {target_loss})  flags"]
  n_solved = 0
  for name, r in results.items():
    line = f"{name:<28}"
    for split in splits:
      s = r[split] if split else r
      line += f" {s['loss']:>10.4f} {s['accuracy']:>6.3f}"
    flags = ", ".join(r.get("flags", [])) or "-"
    verdict = verdict_of(r, target_loss)
    n_solved += verdict.solved
    lines.append(f"{line} {r['pairs']:>6}  {'yes' if verdict else 'no':<28}{flags}")
  lines.append(f"solved: {n_solved} of {len(results)} tasks")
  flagged = sorted({f for r in results.values() for f in r.get("flags", [])})
  lines += [f"flag {f}: {registry.FLAGS[f]}" for f in flagged]
  return "\n".join(lines)
