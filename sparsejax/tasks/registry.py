"""The task registry: a task is a pair generator plus what a researcher must know about its pairs.

Each of the paper's binary next-token tasks (Gao et al. 2025, Table 1) is a function from a
:class:`~sparsejax.tasks.surface.Draw` (the random names, literals and surrounding code of one pair)
to a :class:`TaskPair`, registered with the :meth:`TaskRegistry.register` decorator, which records
next to the generator:

* ``description`` — what the task tests, and where it departs from the paper and why;
* ``expected`` — the decisive token(s) each side must start with, when the task fixes them;
* ``max_edit`` — the bound on the token edit distance between the two contexts (a *minimal
  contrast*: the contexts differ only where the task needs them to; never more than 6);
* ``same_length`` — whether the two contexts have the same token count;
* ``flags`` — properties every report shows (:data:`FLAGS`), e.g. that the contexts end on
  different tokens, so that the bigram table alone can separate them.

:func:`sparsejax.tasks.batch.encode_pairs` enforces all of these for a given tokenizer. This module
is plain Python (no jax): pairs are a pure function of (task, split, seed, index).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Callable, Iterator, Sequence

from sparsejax.tasks import surface
from sparsejax.utils.errors import UserError

SPLITS = ("train", "test", "ood")
MAX_EDIT_LIMIT = 6  # no task's contexts may differ in more tokens than this
# Pairs with a longer context are skipped, so that contexts fit a 128-token model (held-out words
# take about two characters per token) and truncation never cuts into the contrast.
MAX_CONTEXT_CHARS = 240

LAST_TOKEN_DIFFERS = "last_token_differs"
FLAGS = {
    LAST_TOKEN_DIFFERS: "the two contexts end on different tokens (inherent to the task), so the "
                        "bigram table alone can separate them",
}


class UnknownTaskError(UserError, KeyError):
  """A task name that is not registered (the message lists the valid ones)."""

  def __str__(self):  # KeyError would print the message with quotes around it
    return str(self.args[0]) if self.args else ""


class DuplicateTaskError(ValueError):
  """A second task registered under a name already taken (a programming error)."""


@dataclasses.dataclass(frozen=True)
class TaskPair:
  """Two minimally different contexts and their completions (the first token decides)."""

  context_a: str
  context_b: str
  completion_a: str  # correct after context_a, the alternative after context_b
  completion_b: str  # correct after context_b, the alternative after context_a


@dataclasses.dataclass(frozen=True)
class Task:
  """A registered task. Build one with :meth:`TaskRegistry.register`, not directly."""

  name: str
  description: str
  make: Callable[[surface.Draw], TaskPair]  # the generator: one pair from one Draw
  # Decisive token text(s) allowed on side A and on side B (None: any single token).
  expected: tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None = None
  max_edit: int = 1  # bound on the token edit distance between context A and context B
  same_length: bool = True  # whether the two contexts have the same number of tokens
  flags: frozenset[str] = frozenset()  # names from FLAGS

  @property
  def last_token_differs(self) -> bool:
    """The contexts end on different tokens, so the bigram table alone can solve the task."""
    return LAST_TOKEN_DIFFERS in self.flags

  def flag_notes(self) -> list[str]:
    """One line per flag, for reports."""
    return [f"{f}: {FLAGS[f]}" for f in sorted(self.flags)]

  def pair(self, seed: int, index: int, split: str = "train") -> TaskPair:
    """Pair ``index`` of the in-distribution stream ("train"/"test") or of the "ood" stream."""
    _check_split(split)
    ood = split == "ood"
    rng = random.Random(f"sparsejax-task/{self.name}/{'ood' if ood else 'iid'}/{seed}/{index}")
    return self.make(surface.Draw(rng, ood=ood))

  def iter_pairs(self, *, split: str = "train", seed: int = 0) -> Iterator[TaskPair]:
    """The distinct pairs of a split, in a fixed order."""
    _check_split(split)
    seen, index, misses = set(), 0, 0
    while True:
      p = self.pair(seed, index, split)
      index += 1
      key = (p.context_a, p.context_b)
      if (key in seen or max(len(p.context_a), len(p.context_b)) > MAX_CONTEXT_CHARS
          or (split != "ood" and _iid_split_of(p) != split)):
        misses += 1
        if misses > 200 * (len(seen) + 1) + 1000:
          raise RuntimeError(f"task {self.name}: the {split} split has only {len(seen)} distinct "
                             "pairs")
        continue
      seen.add(key)
      yield p

  def pairs(self, n: int, *, split: str = "train", seed: int = 0) -> list[TaskPair]:
    """``n`` distinct pairs of a split.

    "train" and "test" share one generator and vocabulary and are disjoint by content (a hash of
    the contexts picks the split); "ood" uses held-out names, literals and surrounding statements
    that never occur in the built-in corpus or in the train split, longer contexts and distractors.
    """
    it = self.iter_pairs(split=split, seed=seed)
    return [next(it) for _ in range(n)]


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _iid_split_of(p: TaskPair) -> str:
  h = hashlib.sha256(f"{p.context_a}\x00{p.context_b}".encode()).digest()
  return "test" if h[0] % 5 == 0 else "train"


def _as_choices(x) -> tuple[str, ...] | None:
  return None if x is None else ((x,) if isinstance(x, str) else tuple(x))


class TaskRegistry(dict):
  """{name: Task} in registration order; :meth:`register` is the decorator that fills it."""

  def register(self, name: str, *, description: str, expected=None, max_edit: int = 1,
               same_length: bool = True, flags: Sequence[str] = ()):
    """Decorator: registers ``make`` (a function Draw → TaskPair) as task ``name``.

    ``expected`` is None or (side A, side B), each a decisive token text, a tuple of allowed
    texts, or None (any). Raises :class:`DuplicateTaskError` if ``name`` is taken, ValueError for
    an unknown flag or a bound outside 1..MAX_EDIT_LIMIT.
    """
    if name in self:
      raise DuplicateTaskError(f"task {name!r} is already registered")
    unknown = sorted(set(flags) - set(FLAGS))
    if unknown:
      raise ValueError(f"task {name}: unknown flag(s) {', '.join(unknown)}; known: "
                       f"{', '.join(FLAGS)}")
    if not 1 <= max_edit <= MAX_EDIT_LIMIT:
      raise ValueError(f"task {name}: max_edit must be in 1..{MAX_EDIT_LIMIT}, got {max_edit}")
    if not description:
      raise ValueError(f"task {name}: a description is required")
    exp = None if expected is None else (_as_choices(expected[0]), _as_choices(expected[1]))

    def wrap(make: Callable[[surface.Draw], TaskPair]):
      if name in self:  # registered between the call and the decoration
        raise DuplicateTaskError(f"task {name!r} is already registered")
      self[name] = Task(name, description, make, exp, max_edit, same_length, frozenset(flags))
      return make

    return wrap

  def lookup(self, name: str) -> Task:
    """The task called ``name``; an unknown name lists the valid ones."""
    if name not in self:
      raise UnknownTaskError(f"unknown task {name!r}; valid tasks: {', '.join(self)}")
    return self[name]

  def resolve(self, names: str | Sequence[str] | None) -> list[str]:
    """"all" / None / a comma list / a sequence → validated task names."""
    if names is None or names == "all":
      return list(self)
    if isinstance(names, str):
      names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in self]
    if unknown:
      raise UnknownTaskError(f"unknown task(s) {', '.join(unknown)}; valid tasks: "
                             f"{', '.join(self)}")
    return list(names)
