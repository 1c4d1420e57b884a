"""The paper's 20 binary next-token Python tasks (Gao et al. 2025, Table 1), written from scratch.

The official task generators were never released; these follow the paper's one-line descriptions.
Every task produces *pairs* of contexts that differ minimally and need different next tokens: for
context A the correct continuation is ``completion_a`` and the alternative is ``completion_b``; for
context B it is the other way round. A model that always prefers one of the two tokens therefore
gets exactly half of the sequences right.

Contexts are built from random names, literals, lengths and a random stretch of preceding code
(from the built-in corpus generator), so a circuit cannot key on one template. Pairs are a pure
function of (task, seed, index); train and test splits are disjoint by content.

The decisive token of a pair is the first token of its completion;
:func:`sparsejax.tasks.batch.encode_pairs` checks,
for a given tokenizer, that each context tokenizes the same alone and followed by its completion,
that the decisive tokens of A and B differ, and (where the task names it) that the decisive token is
exactly the expected string — otherwise the error names the task and the offending string.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Callable, Sequence

from sparsejax.data import corpus


@dataclasses.dataclass(frozen=True)
class TaskPair:
  """Two minimally different contexts and their completions (first token decides)."""

  context_a: str
  context_b: str
  completion_a: str  # correct after context_a, the alternative after context_b
  completion_b: str  # correct after context_b, the alternative after context_a


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  description: str
  make: Callable[[random.Random], TaskPair]
  expected: tuple[str, str] | None = None  # decisive token texts (a, b) when fixed by the task

  def pair(self, seed: int, index: int) -> TaskPair:
    return self.make(random.Random(f"sparsejax-task/{self.name}/{seed}/{index}"))

  def pairs(self, n: int, *, split: str = "train", seed: int = 0) -> list[TaskPair]:
    """``n`` distinct pairs of a split ("train" or "test"; disjoint by content)."""
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out, seen, index = [], set(), 0
    while len(out) < n:
      p = self.pair(seed, index)
      index += 1
      if index > 200 * n + 1000:
        raise RuntimeError(f"task {self.name}: cannot find {n} distinct {split} pairs")
      key = (p.context_a, p.context_b)
      if key in seen or _split_of(p) != split:
        continue
      seen.add(key)
      out.append(p)
    return out


def _split_of(p: TaskPair) -> str:
  h = hashlib.sha256(f"{p.context_a}\x00{p.context_b}".encode()).digest()
  return "test" if h[0] % 5 == 0 else "train"


# ------------------------------------------------------------------ shared random pieces
def _g(rng: random.Random) -> corpus.Gen:
  return corpus.Gen(rng)


def _prefix(rng: random.Random, max_lines: int = 4) -> str:
  """0..max_lines lines of unrelated top-level code, to vary what comes before the task."""
  g = _g(rng)
  lines: list[str] = []
  for _ in range(rng.randint(0, 2)):
    lines += rng.choice([g.stmt_assign, g.stmt_print, g.stmt_swap, g.stmt_accumulate])(0, 3)
  lines = lines[:max_lines]
  return "\n".join(lines) + "\n" if lines else ""


_SIMPLE_NAMES = ("x", "y", "n", "a", "b", "name", "value", "count", "total", "item", "size",
                 "data", "text", "key", "result", "index", "score", "level", "word", "line")
_ATTRS = ("name", "age", "x", "y", "size", "color", "price", "title", "owner", "speed", "level",
          "score", "value", "data", "count", "width", "height", "label", "items", "balance")
_FLAGS = ("done", "found", "valid", "ready", "enabled", "visible", "changed", "flag", "running",
          "active", "empty", "ok")


def _words(rng, lo=1, hi=3) -> str:
  return " ".join(rng.choice(corpus.WORDS) for _ in range(rng.randint(lo, hi)))


def _indent(rng) -> str:
  return rng.choice(("", "", "    ", "    ", "        "))


def _in_function(rng, body_indent: str) -> str:
  """A def header when the body is indented (so the code stays plausible Python)."""
  if not body_indent:
    return ""
  g = _g(rng)
  header = f"def {g.func_name()}({', '.join(rng.sample(_SIMPLE_NAMES, rng.randint(0, 2)))}):\n"
  if len(body_indent) == 8:
    header += f"    for {g.noun()} in {g.plural()}:\n"
  return header


# ------------------------------------------------------------------ the 20 tasks
def _single_double_quote(rng):
  ind = _indent(rng)
  head = _prefix(rng) + _in_function(rng, ind)
  call = rng.choice(("print", "print", "log", "say", "show", "len", "open", "add_item", "greet"))
  body = _words(rng)
  return TaskPair(f'{head}{ind}{call}("{body}', f"{head}{ind}{call}('{body}", '")\n', "')\n")


def _final_kwarg(rng):
  names = rng.sample(_SIMPLE_NAMES, rng.randint(3, 5))
  g = _g(rng)
  default = rng.choice(("None", "None", "0", "1", "True", "False", "[]", '""'))
  n_pos = rng.randint(1, len(names) - 2)
  kw_prev = ", ".join(names[:n_pos] + [f"{k}={default}" for k in names[n_pos:-1]])
  pos_prev = ", ".join(names[:-1])
  fn = g.func_name()
  head = _prefix(rng)
  return TaskPair(f"{head}def {fn}({kw_prev}, {names[-1]}",
                  f"{head}def {fn}({pos_prev}, {names[-1]}", f"={default}):\n", "):\n")


def _set_or_string(rng, name=None):
  g = _g(rng)
  name = name or rng.choice(("seen", "letters", "names", "words", "result", "output", "parts",
                             "chars", "tags", "keys", "found", "unique"))
  it = g.noun()
  src = g.plural(it)
  q = rng.choice(('"', "'"))
  head = _prefix(rng)
  loop = f"for {it} in {src}:\n    {name}"
  return TaskPair(f"{head}{name} = set()\n{loop}", f"{head}{name} = {q}{q}\n{loop}",
                  f".add({it})\n", f" += {it}\n")


def _class_init(rng):
  a, b = rng.sample(_ATTRS, 2)
  extra = rng.sample([x for x in _ATTRS if x not in (a, b)], rng.randint(0, 2))
  args = ", ".join(extra + [a, b])
  cls = rng.choice(corpus.CLASS_NAMES)
  head = (_prefix(rng) + f"class {cls}:\n    def __init__(self, {args}):\n"
          + "".join(f"        self.{e} = {e}\n" for e in extra))
  return TaskPair(f"{head}        self.{a} = {a}\n        self.{b} =",
                  f"{head}        self.{b} = {b}\n        self.{a} =", f" {b}\n", f" {a}\n")


def _with_as(rng):
  q = rng.choice(('"', "'"))
  stem = rng.choice(corpus.FILE_STEMS)
  mode = rng.choice("rw")
  handle = rng.choice(("f", "fh", "file", "infile", "outfile"))
  call = f"open({q}{stem}.{rng.choice(('txt', 'csv', 'log', 'json'))}{q}, {q}{mode}"
  head = _prefix(rng)
  return TaskPair(f"{head}with {call}", f"{head}{handle} = {call}", f"{q}) as {handle}:\n",
                  f"{q})\n")


def _bracket_brace(rng):
  g = _g(rng)
  q = rng.choice(('"', "'"))
  name = rng.choice(("config", "counts", "scores", "options", "table", "items", "names", "data",
                     g.plural()))
  first = rng.choice(corpus.WORDS)
  head = _prefix(rng)
  return TaskPair(f"{head}{name} = {{{q}{first}", f"{head}{name} = [{q}{first}",
                  f"{q}: {g.literal()}}}\n", f"{q}, {q}{rng.choice(corpus.WORDS)}{q}]\n")


def _with_open(rng):
  q = rng.choice(('"', "'"))
  read, write = rng.choice(corpus.READ_HINTS), rng.choice(corpus.WRITE_HINTS)
  ext = rng.choice(("txt", "csv", "log", "json", "md"))
  handle = rng.choice(("f", "fh", "file"))
  head = _prefix(rng)
  return TaskPair(f"{head}with open({q}{read}.{ext}{q}, {q}",
                  f"{head}with open({q}{write}.{ext}{q}, {q}",
                  f"r{q}) as {handle}:\n", f"w{q}) as {handle}:\n")


def _bracket_counting(rng):
  g = _g(rng)
  name = g.plural()
  nums = [g.number() for _ in range(rng.randint(1, 5))]
  body = ", ".join(nums)
  head = _prefix(rng)
  if rng.random() < 0.5:  # other complete inner lists before the last one
    others = ", ".join(g.flat_list(rng.randint(1, 3), "num") for _ in range(rng.randint(1, 2)))
    nested = f"[{others}, [{body}"
  else:
    nested = f"[[{body}"
  return TaskPair(f"{head}{name} = {nested}", f"{head}{name} = [{body}", "]]\n", "]\n")


def _for_while(rng):
  g = _g(rng)
  # A noun: the corpus loops over nouns (`for node in nodes:`) and walks them (`while node:`).
  var = g.noun()
  ind = _indent(rng)
  head = _prefix(rng) + _in_function(rng, ind)
  return TaskPair(f"{head}{ind}for {var}", f"{head}{ind}while {var}", f" in {g.plural()}:\n",
                  ":\n")


def _else_elif(rng):
  g = _g(rng)
  var = rng.choice(_SIMPLE_NAMES)
  head = (_prefix(rng) + f"{var} = {g.number()}\nif {g.condition(var)}:\n"
          f"    {rng.choice(_SIMPLE_NAMES)} = {g.literal()}\n")
  return TaskPair(f"{head}else", f"{head}elif", ":\n", f" {var} > {g.number()}:\n")


def _fstring_brace(rng):
  g = _g(rng)
  var = rng.choice(_SIMPLE_NAMES)
  q = rng.choice(('"', "'"))
  # The label ends in a letter: punctuation would merge with the closing quote of B.
  label = rng.choice(corpus.WORDS).capitalize() + rng.choice(("", " is", " " + rng.choice(
      corpus.WORDS)))
  head = _prefix(rng) + f"{var} = {g.literal()}\n"
  return TaskPair(f"{head}print(f{q}{label}", f"{head}print({q}{label}", f" {{{var}}}{q})\n",
                  f"{q}, {var})\n")


def _if_ternary(rng):
  g = _g(rng)
  var, target = rng.sample(_SIMPLE_NAMES, 2)
  # A numeric comparison: a string literal would merge its quote with the ":" of B.
  cond = f"{var} {rng.choice(('==', '>', '<', '!=', '>=', '<='))} {g.number()}"
  a = g.literal()
  head = _prefix(rng) + f"{var} = {g.number()}\n"
  return TaskPair(f"{head}{target} = {a} if {cond}", f"{head}if {cond}",
                  f" else {g.literal()}\n", f":\n    {target} = {a}\n")


def _var_swap(rng):
  g = _g(rng)
  a, b = rng.sample(("a", "b", "x", "y", "left", "right", "first", "second", "lo", "hi", "i", "j",
                     "old", "new", "p", "q"), 2)
  head = _prefix(rng) + f"{a} = {g.number()}\n{b} = {g.number()}\n"
  return TaskPair(f"{head}{a}, {b} = {b},", f"{head}{b}, {a} = {a},", f" {a}\n", f" {b}\n")


def _indent_for(rng):
  g = _g(rng)
  it = g.noun()
  loop = f"for {it} in {g.plural(it)}:\n"
  head = _prefix(rng)
  fn = f"def {g.func_name()}({rng.choice(_SIMPLE_NAMES)}):\n"
  return TaskPair(f"{head}{fn}    {loop}", f"{head}{fn}    x = 0\n{loop}",
                  f"        print({it})\n", f"    print({it})\n")


def _lambda_func(rng):
  g = _g(rng)
  name = rng.choice(("square", "double", "add", "inc", "half", "key_fn", "is_even", "negate",
                     "area", "scale", g.func_name()))
  arg = rng.choice(("x", "n", "s", "item", "value", "a", "p"))
  head = _prefix(rng)
  return TaskPair(f"{head}{name} = lambda {arg}", f"{head}def {name}({arg}",
                  f": {arg} * 2\n", f"):\n    return {arg} * 2\n")


def _if_equals(rng):
  g = _g(rng)
  var = rng.choice(_SIMPLE_NAMES)
  ind = _indent(rng)
  head = _prefix(rng) + _in_function(rng, ind)
  value = g.number()
  return TaskPair(f"{head}{ind}if {var}", f"{head}{ind}{var}", f" == {value}:\n",
                  f" = {value}\n")


def _enumerate_range(rng):
  g = _g(rng)
  idx = rng.choice(("i", "index", "n", "pos", "j", "k"))
  it = g.noun()
  src = g.plural(it)
  head = _prefix(rng)
  return TaskPair(f"{head}for {idx}, {it} in", f"{head}for {idx} in",
                  f" enumerate({src}):\n", f" range(len({src})):\n")


def _var_if(rng):
  flag = rng.choice(_FLAGS)
  value = rng.choice(("True", "False"))
  ind = _indent(rng)
  head = _prefix(rng) + _in_function(rng, ind)
  return TaskPair(f"{head}{ind}if {flag} == {value}", f"{head}{ind}{flag} = {value}", ":\n",
                  "\n")


def _while_return_true(rng):
  ind = rng.choice(("    ", "    ", "        "))
  head = _prefix(rng) + _in_function(rng, ind)
  return TaskPair(f"{head}{ind}while True", f"{head}{ind}return True", ":\n", "\n")


_SPECS = [
    ("single_double_quote", "Close a string with the quote it was opened with: `(\"` ... `\")` "
     "vs `('` ... `')`.", _single_double_quote, ('")\n', "')\n")),
    ("final_kwarg", "After keyword arguments, the next def argument needs a default: "
     "`def f(a, b=None, c` → `=` vs `def f(a, b, c` → `):`.", _final_kwarg, None),
    ("set_or_string", "A variable initialised with `set()` grows with `.add`, one initialised with "
     "`\"\"` with `+=`.", _set_or_string, None),
    ("set_or_string_fixedvarname", "set_or_string with the variable always named `current`.",
     lambda rng: _set_or_string(rng, "current"), None),
    ("class_init", "In `__init__`, `self.x =` copies the argument of the same name.",
     _class_init, None),
    ("with_as", "`with open(...)` continues with `as`, `f = open(...)` ends the line.", _with_as,
     None),
    ("bracket_brace", "Inside a dict a key is followed by `:`, inside a list an item by `,`.",
     _bracket_brace, None),
    ("with_open", "Open mode from the file name: input-like names read (`'r'`), output-like names "
     "write (`'w'`).", _with_open, ("r", "w")),
    ("bracket_counting", "Close a list by its nesting depth: `]]` after `[[...`, `]` after `[...`.",
     _bracket_counting, ("]]\n", "]\n")),
    ("for_while", "`for x` continues with ` in`, `while x` with `:`.", _for_while, (" in", ":\n")),
    ("else_elif", "`else` is followed by `:`, `elif` by a condition.", _else_elif, None),
    ("fstring_brace", "Inside an f-string a variable is inserted with `{`; a plain string is "
     "closed instead.", _fstring_brace, None),
    ("if_ternary", "`x = a if cond` continues with ` else`, `if cond` with `:`.", _if_ternary,
     (" else", ":\n")),
    ("var_swap", "`a, b = b,` completes the swap with ` a`.", _var_swap, None),
    ("indent_for", "The body of a `for` is indented one level deeper than the `for` itself.",
     _indent_for, None),
    ("lambda_func", "`f = lambda x` continues with `:`, `def f(x` with `):`.", _lambda_func,
     (":", "):\n")),
    ("if_equals", "A condition compares with ` ==`, a statement assigns with ` =`.", _if_equals,
     (" ==", " =")),
    ("enumerate_range", "Two loop variables need ` enumerate`, one index needs ` range`.",
     _enumerate_range, (" enumerate", " range")),
    ("var_if", "`if flag == True` continues with `:`, `flag = True` ends the line.", _var_if,
     (":\n", "\n")),
    ("while_return_true", "`while True` continues with `:`, `return True` ends the line.",
     _while_return_true, (":\n", "\n")),
]

TASKS: dict[str, Task] = {name: Task(name, desc, make, expected)
                          for name, desc, make, expected in _SPECS}
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
  return TASKS[name]


def resolve_names(names: str | Sequence[str] | None) -> list[str]:
  """"all" / None / a comma list / a sequence → validated task names."""
  if names is None or names == "all":
    return list(TASK_NAMES)
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  unknown = [n for n in names if n not in TASKS]
  if unknown:
    raise KeyError(f"unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(TASK_NAMES)}")
  return list(names)
