"""Tokenized task pairs: :class:`TaskBatch` (a pytree of arrays) and :func:`encode_pairs`.

Encoding validates each pair for a tokenizer: each context tokenizes the same alone and followed by
its completion, the decisive tokens of A and B differ, (where the task names it) the decisive
token is exactly the expected string, and the two contexts are a minimal contrast — at most the
task's bound of tokens apart, of one length where the task says so, ending on the same token
unless the task is flagged otherwise; an error names the task and the offending tokens.
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


class MinimalContrastError(TaskExpressionError):
  """A pair's two contexts are not a minimal contrast for its task (the message says how)."""


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


def _decisive(task: str, context: str, completion: str, ctx: list[int],
              full: list[int]) -> int:
  """The decisive token: the first token of ``full`` (context + completion) after ``ctx``."""
  if full[:len(ctx)] != ctx or len(full) == len(ctx):
    raise TaskExpressionError(
        f"task {task}: the context {context[-40:]!r} does not tokenize the same before "
        f"{completion!r} (so the decisive token is not where the task says)")
  return full[len(ctx)]


def _common_ends(a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
  """(length of the common prefix, length of the common suffix not overlapping it)."""
  p = 0
  while p < min(len(a), len(b)) and a[p] == b[p]:
    p += 1
  s = 0
  while s < min(len(a), len(b)) - p and a[len(a) - 1 - s] == b[len(b) - 1 - s]:
    s += 1
  return p, s


def token_edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
  """Levenshtein distance between two token sequences (insertions, deletions, substitutions).

  The common prefix and suffix are stripped first, so the cost is quadratic only in the differing
  middle (a few tokens for a minimal contrast).
  """
  p, s = _common_ends(a, b)
  a, b = a[p:len(a) - s], b[p:len(b) - s]
  row = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    prev, row[0] = row[0], i
    for j, y in enumerate(b, 1):
      prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
  return row[-1]


def _differing(tokenizer, a: Sequence[int], b: Sequence[int]) -> str:
  """The tokens of the differing middle of a and b, for error messages."""
  p, s = _common_ends(a, b)
  show = lambda ids: [tokenizer.decode([i]) for i in ids]
  return f"{show(a[p:len(a) - s])} vs {show(b[p:len(b) - s])}"


def check_contrast(task: generators.Task, ctx_a: Sequence[int], ctx_b: Sequence[int],
                   tokenizer) -> int:
  """Checks that two tokenized contexts are a minimal contrast for ``task``; returns their token
  edit distance.

  A minimal contrast (i) differs in at most ``task.max_edit`` tokens (edit distance), (ii) has the
  same token count when ``task.same_length``, and (iii) ends on the same token unless the task is
  flagged ``last_token_differs`` — otherwise the bigram table (a function of the last token alone)
  could separate the contexts. Raises :class:`MinimalContrastError` naming the task and tokens.
  """
  dist = token_edit_distance(ctx_a, ctx_b)
  where = f"task {task.name}: contexts ...{tokenizer.decode(ctx_a[-12:])!r} / " \
          f"...{tokenizer.decode(ctx_b[-12:])!r}"
  if dist > task.max_edit:
    raise MinimalContrastError(
        f"{where} are not a minimal contrast: they differ in {dist} tokens (edit distance), the "
        f"task's bound is {task.max_edit}; differing tokens {_differing(tokenizer, ctx_a, ctx_b)}")
  if task.same_length and len(ctx_a) != len(ctx_b):
    raise MinimalContrastError(
        f"{where} have {len(ctx_a)} and {len(ctx_b)} tokens; the task promises the same length "
        f"(differing tokens {_differing(tokenizer, ctx_a, ctx_b)})")
  if not task.last_token_differs and ctx_a[-1:] != ctx_b[-1:]:
    last = [tokenizer.decode(c[-1:]) for c in (ctx_a, ctx_b)]
    raise MinimalContrastError(
        f"{where} end on different tokens {last[0]!r} vs {last[1]!r}, so the bigram table alone "
        f"could separate them; only a task flagged {generators.LAST_TOKEN_DIFFERS!r} may")
  return dist


def _contrast_survives(a: Sequence[int], b: Sequence[int], max_len: int) -> bool:
  """Whether keeping the last ``max_len`` tokens keeps everything from the first difference on."""
  p, _ = _common_ends(a, b)
  return len(a) - p <= max_len and len(b) - p <= max_len


def _check_expected(task: generators.Task, tokenizer, got: int, want, completion: str) -> None:
  """The decisive token ``got`` must be one of the texts ``want`` (None: any)."""
  text = tokenizer.decode([got])
  if want is None or text in want:
    return
  for w in want:
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode(w)]
    if len(pieces) > 1:
      raise TaskExpressionError(
          f"task {task.name}: {w!r} is not a single token under this tokenizer (it tokenizes as "
          f"{pieces}; decisive token of {completion!r} is {text!r})")
  raise TaskExpressionError(f"task {task.name}: the decisive token of {completion!r} is {text!r}, "
                            f"not the task's {' or '.join(map(repr, want))}")


def encode_pairs(task: generators.Task, pairs: Sequence[generators.TaskPair], tokenizer,
                 max_len: int | None = None, *, check: bool = True) -> TaskBatch:
  """Tokenizes and validates pairs. Contexts longer than ``max_len`` keep their last tokens.

  Validation (``check=True``): each context tokenizes the same alone and followed by its
  completion; the decisive tokens of A and B differ and are the task's expected ones; and the two
  contexts are a minimal contrast (:func:`check_contrast`, on the full contexts). ``check=False``
  skips the last two, for tokenizers the bounds were not written for (e.g. bytes).
  """
  pairs = list(pairs)
  texts = [t for p in pairs for t in (p.context_a, p.context_a + p.completion_a, p.context_b,
                                      p.context_b + p.completion_b)]
  ids = tokenizer.encode_batch(texts) if texts else []
  rows, correct, alt = [], [], []
  for i, p in enumerate(pairs):
    ctx_a, full_a, ctx_b, full_b = ids[4 * i:4 * i + 4]
    tok_a = _decisive(task.name, p.context_a, p.completion_a, ctx_a, full_a)
    tok_b = _decisive(task.name, p.context_b, p.completion_b, ctx_b, full_b)
    if tok_a == tok_b:
      raise TaskExpressionError(
          f"task {task.name}: completions {p.completion_a!r} and {p.completion_b!r} start with "
          f"the same token {tokenizer.decode([tok_a])!r}")
    if check:
      if task.expected is not None:
        for want, got, comp in zip(task.expected, (tok_a, tok_b), (p.completion_a, p.completion_b)):
          _check_expected(task, tokenizer, got, want, comp)
      check_contrast(task, ctx_a, ctx_b, tokenizer)
    if max_len is not None:
      if max(len(ctx_a), len(ctx_b)) > max_len and not _contrast_survives(ctx_a, ctx_b, max_len):
        raise MinimalContrastError(
            f"task {task.name}: keeping the last {max_len} tokens of contexts of "
            f"{len(ctx_a)} / {len(ctx_b)} tokens cuts into where they differ")
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
