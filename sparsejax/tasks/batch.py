"""Tokenized task pairs: :class:`TaskBatch` (a pytree of arrays) and :func:`encode_pairs`.

Encoding validates each pair for a tokenizer: each context tokenizes the same alone and followed by
its completion, the decisive tokens of A and B differ, and (where the task names it) the decisive
token is exactly the expected string; otherwise the error names the task and the offending string.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from sparsejax.tasks import generators
from sparsejax.utils.errors import UserError


class TaskExpressionError(UserError, ValueError):
  """A tokenizer cannot express a task (the message names the task and the string)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TaskBatch:
  """Pairs as arrays. Sequence 0 of a pair is context A, 1 is context B.

  tokens:   int32 (N, 2, T), right-padded with 0
  last:     int32 (N, 2), index of the last context token (where the next token is scored)
  correct:  int32 (N, 2), the correct next token of each sequence
  alt:      int32 (N, 2), the alternative token
  """

  tokens: np.ndarray
  last: np.ndarray
  correct: np.ndarray
  alt: np.ndarray

  @property
  def seq_len(self) -> int:
    return self.tokens.shape[-1]

  def pad_to(self, seq_len: int) -> "TaskBatch":
    extra = seq_len - self.seq_len
    if extra < 0:
      raise ValueError(f"cannot pad length {self.seq_len} to {seq_len}")
    return dataclasses.replace(self, tokens=np.pad(self.tokens, ((0, 0), (0, 0), (0, extra))))


def _decisive(tokenizer, task: str, context: str, completion: str) -> tuple[list[int], int]:
  ctx = tokenizer.encode(context)
  full = tokenizer.encode(context + completion)
  if full[:len(ctx)] != ctx or len(full) == len(ctx):
    raise TaskExpressionError(
        f"task {task}: the context {context[-40:]!r} does not tokenize the same before "
        f"{completion!r} (so the decisive token is not where the task says)")
  return ctx, full[len(ctx)]


def encode_pairs(task: generators.Task, pairs: Sequence[generators.TaskPair], tokenizer,
                 max_len: int | None = None) -> TaskBatch:
  """Tokenizes and validates pairs. Contexts longer than ``max_len`` keep their last tokens."""
  rows, correct, alt = [], [], []
  for p in pairs:
    ctx_a, tok_a = _decisive(tokenizer, task.name, p.context_a, p.completion_a)
    ctx_b, tok_b = _decisive(tokenizer, task.name, p.context_b, p.completion_b)
    if tok_a == tok_b:
      raise TaskExpressionError(
          f"task {task.name}: completions {p.completion_a!r} and {p.completion_b!r} start with "
          f"the same token {tokenizer.decode([tok_a])!r}")
    if task.expected is not None:
      for want, got, comp in zip(task.expected, (tok_a, tok_b), (p.completion_a, p.completion_b)):
        if tokenizer.decode([got]) != want:
          pieces = [tokenizer.decode([i]) for i in tokenizer.encode(want)]
          raise TaskExpressionError(
              f"task {task.name}: {want!r} is not a single token under this tokenizer (it "
              f"tokenizes as {pieces}; decisive token of {comp!r} is "
              f"{tokenizer.decode([got])!r})")
    if max_len is not None:
      ctx_a, ctx_b = ctx_a[-max_len:], ctx_b[-max_len:]
    rows.append((ctx_a, ctx_b))
    correct.append((tok_a, tok_b))
    alt.append((tok_b, tok_a))
  T = max(len(c) for r in rows for c in r)
  tokens = np.zeros((len(rows), 2, T), np.int32)
  last = np.zeros((len(rows), 2), np.int32)
  for i, r in enumerate(rows):
    for j, c in enumerate(r):
      tokens[i, j, :len(c)] = c
      last[i, j] = len(c) - 1
  return TaskBatch(tokens, last, np.asarray(correct, np.int32), np.asarray(alt, np.int32))
