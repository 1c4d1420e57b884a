"""The surface of a task pair: names, literals and the code around the contrast, per split.

The task generators draw everything that is not the task's idiom from a :class:`Draw`. Its
vocabulary is written here, independently of the built-in corpus generator
(:mod:`sparsejax.data.corpus`), so that a model trained on the corpus can solve a task only by
having learned the idiom, not one template with one word list.

Two vocabularies:

* :data:`IID` — ordinary names and words, for the "train" and "test" splits;
* :data:`OOD` — held out: names, string words, numbers, statements (comments, ``assert``,
  ``try``/``except``, ``del``, ``*=``) and enclosing blocks that never occur in the corpus or in
  the train split (``tests/tasks_test.py`` checks both), with longer surrounding code. Tasks add
  their own distractors on this split (a quote inside a comment, a bracket inside a comment).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Vocab:
  """The word lists of one split. Nouns take a plural with "s"."""

  names: tuple[str, ...]  # variable names
  nouns: tuple[str, ...]  # things in a collection: `for {noun} in {noun}s:`
  words: tuple[str, ...]  # words inside string literals
  verbs: tuple[str, ...]  # first half of function names: `{verb}_{noun}s`
  classes: tuple[str, ...]  # class names
  attrs: tuple[str, ...]  # attribute names copied in __init__
  flags: tuple[str, ...]  # boolean variables
  calls: tuple[str, ...]  # functions called with one string argument
  containers: tuple[str, ...]  # names of accumulators, dicts and lists
  handles: tuple[str, ...]  # file handles
  exts: tuple[str, ...]  # file extensions
  short: tuple[str, ...]  # one-letter / short names (swaps, lambda arguments); one token each
  numbers: tuple[int, int]  # range of integer literals


IID = Vocab(
    names=("x", "y", "n", "k", "name", "value", "count", "total", "item", "size", "data", "text",
           "key", "result", "index", "score", "level", "word", "line", "amount", "limit", "step"),
    nouns=("item", "value", "word", "line", "row", "user", "score", "price", "name", "key",
           "point", "node", "color", "book", "order", "task", "label", "token", "grade", "player",
           "student", "product", "letter", "page", "event", "record", "message", "number"),
    words=("hello", "world", "apple", "orange", "red", "green", "blue", "cat", "dog", "yes", "no",
           "done", "start", "stop", "error", "ok", "python", "spam", "eggs", "foo", "bar", "north",
           "south", "sun", "moon", "tea", "cake", "tree", "river", "light", "fast", "slow", "big",
           "small", "good", "bad"),
    verbs=("get", "compute", "load", "save", "parse", "build", "process", "update", "find",
           "count", "check", "make", "add", "show", "format", "collect", "filter", "merge",
           "clean", "sort"),
    classes=("Point", "User", "Account", "Counter", "Item", "Node", "Player", "Car", "Book",
             "Student", "Shape", "Order", "Task", "Timer", "Game", "Team", "Song", "Ticket"),
    attrs=("name", "age", "x", "y", "size", "color", "price", "title", "owner", "speed", "level",
           "score", "value", "data", "count", "width", "height", "label", "items"),
    flags=("done", "found", "valid", "ready", "enabled", "visible", "changed", "flag", "running",
           "active", "empty", "ok"),
    calls=("print", "print", "print", "log", "show", "len", "greet", "say", "add_item"),
    containers=("seen", "letters", "names", "words", "result", "output", "parts", "chars", "tags",
                "keys", "found", "unique", "config", "counts", "scores", "options", "table"),
    handles=("f", "fh", "file", "infile", "outfile"),
    exts=("txt", "csv", "log", "json", "md"),
    short=("a", "b", "x", "y", "i", "j", "n", "p", "q", "s", "lo", "hi", "left", "right", "old",
           "new", "first", "second"),
    numbers=(0, 1000),
)

OOD = Vocab(
    names=("quokka", "zephyr", "marble", "lantern", "pebble", "comet", "harbor", "walnut",
           "meadow", "orchid", "falcon", "ember", "glacier", "tundra", "juniper", "mosaic"),
    nouns=("widget", "gadget", "parcel", "crate", "beacon", "pixel", "voxel", "sprocket", "gizmo",
           "relic", "acorn", "kettle"),
    words=("velvet", "saffron", "quartz", "plum", "ivory", "indigo", "amber", "coral", "maple",
           "cedar", "nectar", "lagoon"),
    verbs=("tally", "stash", "grind", "polish", "harvest", "brew", "weave", "forge", "knit",
           "sift"),
    classes=("Lantern", "Kettle", "Falcon", "Compass", "Anchor", "Harp"),
    # Distinct first letters: the decisive tokens (the attributes' first tokens) must differ.
    attrs=("hue", "mass", "rank", "zone", "bulk", "pace", "tier", "grip"),
    flags=("armed", "sealed", "frozen", "primed", "docked", "muted"),
    calls=("announce", "shout", "whisper", "emit"),
    containers=("stash", "hoard", "bundle", "pile", "heap", "batch"),
    handles=("fp", "fd", "fo"),
    exts=("dat", "tsv", "ini", "yaml"),
    # Single letters are single tokens only when the corpus uses them: held-out short names are
    # letters with one digit (distinct letters, so the first tokens of two names differ; the same
    # digit, so two names differ in one token).
    short=("a7", "b7", "x7", "y7", "p7", "q7", "i7", "j7"),
    numbers=(1001, 9999),
)

# Words of the held-out vocabulary: none may occur in the corpus or in train pairs.
OOD_WORDS = frozenset(
    w.lower() for field in dataclasses.fields(Vocab) if field.name not in ("numbers", "short")
    for entry in getattr(OOD, field.name) for w in re.findall(r"[A-Za-z]+", entry))
# Statement keywords only the held-out split uses.
OOD_KEYWORDS = frozenset({"assert", "try", "except", "del", "KeyError"})


def words_of(text: str) -> set[str]:
  """The lower-cased letter runs of ``text`` (identifiers split at ``_`` and digits)."""
  return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def indent(lines: Sequence[str], levels: int = 1) -> list[str]:
  """Lines indented by ``levels`` × 4 spaces (blank lines stay blank)."""
  pad = "    " * levels
  return [pad + line if line else line for line in lines]


def weighted(rng: random.Random, table: dict):
  """One key of ``{option: weight}``, drawn with probability proportional to its weight."""
  return rng.choices(list(table), weights=list(table.values()))[0]


class Draw:
  """The random choices of one pair, from :data:`IID` or (``ood=True``) :data:`OOD`."""

  def __init__(self, rng: random.Random, *, ood: bool = False):
    self.r = rng
    self.ood = ood
    self.v = OOD if ood else IID

  # ------------------------------------------------------------------ small pieces
  def pick(self, seq: Sequence):
    return self.r.choice(seq)

  def sample(self, seq: Sequence, k: int) -> list:
    return self.r.sample(seq, k)

  def randint(self, lo: int, hi: int) -> int:
    return self.r.randint(lo, hi)

  def weighted(self, table: dict):
    return weighted(self.r, table)

  def quote(self) -> str:
    return self.pick(('"', "'"))

  def name(self) -> str:
    return self.pick(self.v.names)

  def noun(self) -> str:
    return self.pick(self.v.nouns)

  @staticmethod
  def plural(noun: str) -> str:
    return noun + "s"

  def word(self) -> str:
    return self.pick(self.v.words)

  def words(self, lo: int = 1, hi: int = 3) -> str:
    return " ".join(self.word() for _ in range(self.randint(lo, hi)))

  def number(self) -> str:
    lo, hi = self.v.numbers
    return str(self.randint(lo, min(hi, lo + 20)) if self.r.random() < 0.6 else
               self.randint(lo, hi))

  def string(self, q: str | None = None) -> str:
    q = q or self.quote()
    return f"{q}{self.words()}{q}"

  def literal(self) -> str:
    kind = self.weighted({"number": 5, "string": 4, "constant": 1})
    if kind == "number":
      return self.number()
    return self.string() if kind == "string" else self.pick(("True", "False", "None"))

  def func_name(self) -> str:
    return f"{self.pick(self.v.verbs)}_{self.plural(self.noun())}"

  # ------------------------------------------------------------------ surrounding code
  def statement(self) -> list[str]:
    """One complete top-level statement (lines at indent 0) unrelated to any task."""
    table = _OOD_STATEMENTS if self.ood else _IID_STATEMENTS
    return self.weighted(table)(self)

  def prefix(self, distractors: Sequence[str] = (), most: int | None = None) -> str:
    """Code before the task: 0–2 statements in distribution, one held-out statement on "ood" (at
    most ``most``; held-out words take several tokens each, so that is already longer).

    ``distractors`` (ood only) are lines placed after them, right before the context's block.
    """
    lo, hi = (1, 1) if self.ood else (0, 2)
    if most is not None:
      lo, hi = min(lo, most), min(hi, most)
    lines = [line for _ in range(self.randint(lo, hi)) for line in self.statement()]
    if self.ood and distractors:
      lines += list(distractors)
    return "".join(line + "\n" for line in lines)

  def opening(self, levels: Sequence[int] = (0, 0, 1, 1, 2), distractors: Sequence[str] = (),
              most: int | None = None) -> tuple[str, str]:
    """(code before the context, the context line's indent): a :meth:`prefix`, then blocks that
    make an indented line valid Python (a function, a loop in it; held-out blocks on "ood")."""
    level = self.pick(levels)
    head = self.prefix(distractors, most)
    if level == 0:
      return head, ""
    if self.ood:
      name = self.func_name()
      args = ", ".join(self.sample(self.v.names, self.randint(0, 1)))
      inner = (f"if {self.pick(self.v.flags)}:", f"while not {self.pick(self.v.flags)}:",
               f"for {self.noun()} in {self.plural(self.noun())}:")
      blocks = [f"def {name}({args}):", self.pick(inner)]
    else:
      args = ", ".join(self.sample(self.v.names, self.randint(0, 2)))
      noun = self.noun()
      blocks = [f"def {self.func_name()}({args}):", f"for {noun} in {self.plural(noun)}:"]
    lines = [("    " * i) + b for i, b in enumerate(blocks[:level])]
    return head + "".join(line + "\n" for line in lines), "    " * level


# ------------------------------------------------------------------ statement tables
def _assign(d: Draw) -> list[str]:
  return [f"{d.name()} = {d.literal()}"]


def _print(d: Draw) -> list[str]:
  return [f"print({d.pick((d.name(), d.string()))})"]


def _call(d: Draw) -> list[str]:
  return [f"{d.name()} = {d.func_name()}({d.name()})"]


def _accumulate(d: Draw) -> list[str]:
  total, it = d.pick(("total", "count", "result")), d.noun()
  return [f"{total} = 0", f"for {it} in {d.plural(it)}:", *indent([f"{total} += {it}"])]


def _append(d: Draw) -> list[str]:
  return [f"{d.plural(d.noun())}.append({d.literal()})"]


_IID_STATEMENTS: dict[Callable[[Draw], list[str]], float] = {
    _assign: 3, _print: 2, _call: 2, _accumulate: 1, _append: 1}


def _comment(d: Draw) -> list[str]:
  return [f"# {d.words(2, 4)}"]


def _assert(d: Draw) -> list[str]:
  return [f"assert {d.name()} > {d.number()}"]


def _scale(d: Draw) -> list[str]:
  return [f"{d.name()} = {d.number()}", f"{d.name()} *= {d.pick(('2', '3', '10'))}"]


def _try(d: Draw) -> list[str]:
  name = d.name()
  return ["try:", *indent([f"{name} = {d.func_name()}()"]), "except KeyError:",
          *indent([f"{name} = None"])]


def _delete(d: Draw) -> list[str]:
  name = d.name()
  return [f"{name} = [{d.number()}, {d.number()}]", f"del {name}[0]"]


_OOD_STATEMENTS: dict[Callable[[Draw], list[str]], float] = {
    _comment: 2, _assert: 1, _scale: 1, _try: 1, _delete: 1}
