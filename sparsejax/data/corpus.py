"""A built-in, offline generator of simple, repetitive Python programs.

In the spirit of the paper's "TinyStories for Python" data (Gao et al. 2025, App. A.6): short
modules made of functions, classes and scripts that use, over and over, the idioms the paper's 20
pruning tasks probe — quotes of both styles, default arguments, ``set()`` vs string accumulators,
``__init__`` attribute copies, ``with open(...) as f`` in read and write modes, nested lists and
dicts, for / while loops, if / elif / else, ternaries, f-strings, swaps, lambdas, ``enumerate`` /
``range``, ``== True`` checks, ``while True`` / ``return True`` — with names, literals, nesting and
lengths drawn at random, so that no idiom is tied to one template.

Everything is a pure function of the seed: ``generate_documents(seed, n)`` always returns the same
programs, and ``document(seed, i)`` is document i of that stream (random access, so a corpus can be
built in parallel or resumed).
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

# ------------------------------------------------------------------ vocabulary
NOUNS = (
    "item", "value", "number", "name", "word", "line", "row", "record", "user", "score", "price",
    "count", "total", "result", "text", "message", "key", "entry", "point", "node", "city",
    "color", "animal", "book", "order", "task", "file", "label", "token", "grade", "step", "size",
    "level", "player", "student", "product", "letter", "digit", "page", "event",
)
PLURALS = {n: n + "s" for n in NOUNS}
PLURALS.update({"city": "cities", "entry": "entries", "box": "boxes"})
VERBS = (
    "get", "compute", "load", "save", "parse", "build", "process", "update", "find", "count",
    "check", "make", "add", "remove", "show", "format", "collect", "filter", "merge", "clean",
    "sort", "scale", "print", "read", "write", "convert", "split", "join", "average", "sum",
)
CLASS_NAMES = (
    "Point", "User", "Account", "Counter", "Stack", "Queue", "Item", "Node", "Config", "Player",
    "Car", "Book", "Student", "Shape", "Animal", "Order", "Task", "Timer", "Box", "Game", "Robot",
    "Library", "Inventory", "Recipe", "Team", "Course", "Ticket", "Wallet", "Garden", "Song",
)
WORDS = (
    "hello", "world", "apple", "banana", "cherry", "red", "green", "blue", "cat", "dog", "bird",
    "alpha", "beta", "gamma", "yes", "no", "done", "start", "stop", "error", "ok", "python",
    "data", "spam", "eggs", "foo", "bar", "baz", "north", "south", "east", "west", "sun", "moon",
    "tea", "cake", "rock", "tree", "river", "stone", "light", "dark", "fast", "slow", "big",
)
# File names say how a file is opened: READ_HINTS are read ('r'), WRITE_HINTS written ('w' / 'a');
# neutral stems go either way. (The with_open task relies on the association.)
READ_HINTS = ("input", "source", "data", "in", "raw", "config", "settings", "template")
WRITE_HINTS = ("output", "result", "report", "out", "summary", "log", "results", "export")
FILE_STEMS = ("notes", "names", "scores", "words", "users", "items", "cache", "list", "records",
              "text")


# Idioms the paper's 20 tasks probe, as patterns over generated source. The corpus test asserts
# each one appears, so a change to the generator cannot silently drop one.
IDIOMS = {
    "double_quoted_string_arg": r'\("[^"\n]*"\)',
    "single_quoted_string_arg": r"\('[^'\n]*'\)",
    "keyword_default_after_positional": r"def \w+\(\w+, \w+=",
    "set_accumulator": r"(\w+) = set\(\)\n(?:.*\n)*?.*\1\.add\(",
    "string_accumulator": r"(\w+) = (\"\"|'')\n(?:.*\n)*?.*\1 \+= ",
    "fixed_name_current": r"current = (set\(\)|\"\"|'')",
    "class_init_copies": r"def __init__\(self, (\w+).*\n\s+self\.\1 = \1",
    "with_open_as": r"with open\(.*\) as \w+:",
    "open_assignment": r"\w+ = open\(",
    "open_read_mode": r"open\([^)]*['\"]r['\"]\)",
    "open_write_mode": r"open\([^)]*['\"]w['\"]\)",
    "dict_literal": r"\{['\"]\w+['\"]: ",
    "list_literal": r"\[\d+, \d+",
    "nested_list_close": r"\]\]",
    "nested_list_depth3": r"\[\[\[",
    "multiline_list_row": r"\n\s+\[.*\],\n",
    "for_in_loop": r"for \w+ in \w+:",
    "while_condition": r"while \w+ < \w+:",
    "while_flag": r"while [a-z]+:",
    "while_true": r"while True:",
    "return_true": r"return True\n",
    "elif_branch": r"elif .+:",
    "else_branch": r"else:\n",
    "fstring_brace": r"f(['\"]).*\{\w+\}.*\1",
    "plain_string_print": r"print\((['\"])[^{}]*\1\)",
    "ternary": r"= .+ if .+ else .+",
    "tuple_swap": r"(\w+), (\w+) = \2, \1",
    "indented_for_body": r"for .*:\n {8,}\S",
    "lambda": r"lambda \w+: ",
    "def_function": r"def \w+\(",
    "if_equals": r"if \w+ == \w+:",
    "assign_equals": r"\n\s*\w+ = \d+\n",
    "enumerate_loop": r"for \w+, \w+ in enumerate\(",
    "range_loop": r"for \w+ in range\(",
    "bool_equals_check": r"if \w+ == (True|False):",
    "bool_assignment": r"\w+ = (True|False)\n",
}


class Gen:  # public: the task generators build their contexts with it
  """One program's worth of random choices. Every method returns source lines (no newline)."""

  def __init__(self, rng: random.Random):
    self.r = rng
    self.used_names: set[str] = set()

  # -------------------------------------------------------------- small pieces
  def choice(self, seq):
    return self.r.choice(seq)

  def chance(self, p: float) -> bool:
    return self.r.random() < p

  def noun(self) -> str:
    return self.choice(NOUNS)

  def plural(self, noun: str | None = None) -> str:
    return PLURALS[noun or self.noun()]

  def var(self) -> str:
    """A variable name: a noun, sometimes with a prefix or a digit."""
    base = self.noun()
    roll = self.r.random()
    if roll < 0.2:
      base = self.choice(("new", "old", "my", "first", "last", "max", "min", "next")) + "_" + base
    elif roll < 0.3:
      base = base + str(self.r.randint(1, 3))
    return base

  def func_name(self) -> str:
    name = f"{self.choice(VERBS)}_{self.choice((self.noun(), self.plural()))}"
    return name

  def quote(self) -> str:
    return self.choice(('"', "'"))

  def string(self, q: str | None = None) -> str:
    q = q or self.quote()
    n = self.r.randint(1, 3)
    body = " ".join(self.choice(WORDS) for _ in range(n))
    if self.chance(0.15):
      body = body.capitalize() + self.choice(("!", ".", "?", ":"))
    return f"{q}{body}{q}"

  def number(self) -> str:
    roll = self.r.random()
    if roll < 0.6:
      return str(self.r.randint(0, 20))
    if roll < 0.85:
      return str(self.r.randint(21, 1000))
    return f"{self.r.randint(0, 99)}.{self.r.randint(0, 99)}"

  def literal(self) -> str:
    roll = self.r.random()
    if roll < 0.45:
      return self.number()
    if roll < 0.85:
      return self.string()
    return self.choice(("True", "False", "None"))

  def flat_list(self, n: int | None = None, kind: str | None = None) -> str:
    n = self.r.randint(0, 5) if n is None else n
    kind = kind or self.choice(("num", "str"))
    q = self.quote()
    items = [self.number() if kind == "num" else self.string(q) for _ in range(n)]
    return "[" + ", ".join(items) + "]"

  def nested_list(self, depth: int) -> str:
    if depth <= 1:
      return self.flat_list(self.r.randint(1, 4), "num")
    n = self.r.randint(1, 3)
    parts = [self.nested_list(depth - 1) if self.chance(0.75) else self.number()
             for _ in range(n)]
    if not any(p.startswith("[") for p in parts):
      parts[0] = self.nested_list(depth - 1)
    return "[" + ", ".join(parts) + "]"

  def dict_literal(self, n: int | None = None) -> str:
    n = self.r.randint(1, 4) if n is None else n
    q = self.quote()
    keys = self.r.sample(WORDS, n)
    vals = [self.literal() if self.chance(0.7) else self.flat_list(self.r.randint(1, 3))
            for _ in range(n)]
    return "{" + ", ".join(f"{q}{k}{q}: {v}" for k, v in zip(keys, vals)) + "}"

  def condition(self, name: str) -> str:
    roll = self.r.random()
    if roll < 0.3:
      return f"{name} == {self.number()}"
    if roll < 0.5:
      return f"{name} > {self.number()}"
    if roll < 0.6:
      return f"{name} < {self.number()}"
    if roll < 0.7:
      return f"{name} != {self.number()}"
    if roll < 0.8:
      return f"{name} == {self.string()}"
    if roll < 0.9:
      return f"{name} % 2 == 0"
    return f"not {name}"

  # -------------------------------------------------------------- statements
  # Each statement generator takes the indent (in spaces) and the depth, returns lines.
  def stmt_assign(self, ind, depth):
    name = self.var()
    return [f"{' ' * ind}{name} = {self.literal()}", *self.maybe_use(ind, name)]

  def maybe_use(self, ind, name):
    if self.chance(0.4):
      return [f"{' ' * ind}print({name})"]
    return []

  def stmt_print(self, ind, depth):
    q = self.quote()
    roll = self.r.random()
    name = self.var()
    if roll < 0.35:
      return [f"{' ' * ind}print({self.string(q)})"]
    if roll < 0.6:
      return [f"{' ' * ind}{name} = {self.number()}",
              f"{' ' * ind}print(f{q}{self.choice(WORDS)} {{{name}}}{q})"]
    if roll < 0.8:
      return [f"{' ' * ind}print({self.string(q)}, {name})" if self.chance(0.5) else
              f"{' ' * ind}print({q}{self.choice(WORDS)} {name}{q})"]
    other = self.var()
    return [f"{' ' * ind}{name} = {self.string()}",
            f"{' ' * ind}{other} = f{q}{self.choice(WORDS).capitalize()}: {{{name}}}!{q}",
            f"{' ' * ind}print({other})"]

  def stmt_list(self, ind, depth):
    name = self.plural()
    roll = self.r.random()
    if roll < 0.4:
      lines = [f"{' ' * ind}{name} = {self.flat_list()}"]
    elif roll < 0.75:
      lines = [f"{' ' * ind}{name} = {self.nested_list(self.r.randint(2, 3))}"]
    else:  # a multi-line nested list: rows end with "]," / "]]" / "]\n"
      rows = [self.nested_list(self.r.randint(1, 2)) for _ in range(self.r.randint(2, 4))]
      lines = [f"{' ' * ind}{name} = ["]
      lines += [f"{' ' * (ind + 4)}{row}," for row in rows[:-1]]
      lines += [f"{' ' * (ind + 4)}{rows[-1]}", f"{' ' * ind}]"]
    if self.chance(0.3):
      lines.append(f"{' ' * ind}{name}.append({self.number()})")
    return lines

  def stmt_dict(self, ind, depth):
    name = self.choice(("config", "counts", "scores", "prices", "ages", "table", "lookup",
                        "options", "settings", self.noun() + "_map", self.plural()))
    lines = [f"{' ' * ind}{name} = {self.dict_literal()}"]
    q = self.quote()
    roll = self.r.random()
    if roll < 0.3:
      lines.append(f"{' ' * ind}{name}[{q}{self.choice(WORDS)}{q}] = {self.literal()}")
    elif roll < 0.5:
      lines.append(f"{' ' * ind}for key, value in {name}.items():")
      lines.append(f"{' ' * (ind + 4)}print(key, value)")
    return lines

  def stmt_set_or_string(self, ind, depth, name=None):
    name = name or self.choice((self.var(), "seen", "letters", "names", "words", "current",
                                "result", "output", "parts"))
    src, it = self.plural(), self.noun()
    lines = [f"{' ' * ind}{src} = {self.flat_list(self.r.randint(2, 5), 'str')}"] if self.chance(
        0.5) else []
    if self.chance(0.5):
      lines.append(f"{' ' * ind}{name} = set()")
      lines.append(f"{' ' * ind}for {it} in {src}:")
      if self.chance(0.3):
        lines.append(f"{' ' * (ind + 4)}if {it} not in {name}:")
        lines.append(f"{' ' * (ind + 8)}{name}.add({it})")
      else:
        lines.append(f"{' ' * (ind + 4)}{name}.add({it})")
    else:
      q = self.quote()
      lines.append(f"{' ' * ind}{name} = {q}{q}")
      lines.append(f"{' ' * ind}for {it} in {src}:")
      lines.append(f"{' ' * (ind + 4)}{name} += {it}")
    if self.chance(0.5):
      lines.append(f"{' ' * ind}print({name})")
    return lines

  def stmt_if(self, ind, depth):
    name = self.var()
    lines = [f"{' ' * ind}{name} = {self.number()}"] if self.chance(0.6) else []
    lines.append(f"{' ' * ind}if {self.condition(name)}:")
    lines += self.block(ind + 4, depth + 1, 1, 2)
    for _ in range(self.r.randint(0, 2)):
      lines.append(f"{' ' * ind}elif {self.condition(name)}:")
      lines += self.block(ind + 4, depth + 1, 1, 2)
    if self.chance(0.6):
      lines.append(f"{' ' * ind}else:")
      lines += self.block(ind + 4, depth + 1, 1, 2)
    return lines

  def stmt_ternary(self, ind, depth):
    name, target = self.var(), self.var()
    a, b = self.literal(), self.literal()
    lines = [f"{' ' * ind}{name} = {self.number()}"] if self.chance(0.5) else []
    lines.append(f"{' ' * ind}{target} = {a} if {self.condition(name)} else {b}")
    return lines + self.maybe_use(ind, target)

  def stmt_for(self, ind, depth):
    roll = self.r.random()
    it = self.noun()
    src = self.plural(it)
    lines = []
    if roll < 0.4:
      if self.chance(0.5):
        lines.append(f"{' ' * ind}{src} = {self.flat_list(self.r.randint(1, 4))}")
      lines.append(f"{' ' * ind}for {it} in {src}:")
    elif roll < 0.7:
      lines.append(f"{' ' * ind}for {self.choice(('i', 'j', 'n', 'k', 'index'))} in range("
                   f"{self.choice((self.number(), 'len(' + src + ')', self.var()))}):")
    else:
      idx = self.choice(("i", "index", "n", "pos", "j"))
      lines.append(f"{' ' * ind}for {idx}, {it} in enumerate({src}):")
    lines += self.block(ind + 4, depth + 1, 1, 3)
    return lines

  def stmt_while(self, ind, depth):
    roll = self.r.random()
    if roll < 0.4:
      name = self.choice(("i", "n", "count", "steps", "tries"))
      limit = self.number()
      return [f"{' ' * ind}{name} = 0", f"{' ' * ind}while {name} < {limit}:",
              *self.block(ind + 4, depth + 1, 0, 2), f"{' ' * (ind + 4)}{name} += 1"]
    if roll < 0.5:
      queue = self.plural()
      return [f"{' ' * ind}while {queue}:",
              f"{' ' * (ind + 4)}{self.noun()} = {queue}.pop()",
              *self.block(ind + 4, depth + 1, 0, 1)]
    if roll < 0.6:  # walk a chain: the loop variable is a noun, as in `for node in nodes:`
      node = self.noun()
      return [f"{' ' * ind}while {node}:", *self.block(ind + 4, depth + 1, 0, 1),
              f"{' ' * (ind + 4)}{node} = {node}.{self.choice(('next', 'parent', 'child'))}"]
    if roll < 0.75:
      flag = self.choice(("running", "active", "waiting", "searching", "ok", "busy", "alive"))
      return [f"{' ' * ind}{flag} = True", f"{' ' * ind}while {flag}:",
              *self.block(ind + 4, depth + 1, 0, 2),
              f"{' ' * (ind + 4)}if {self.condition(self.var())}:",
              f"{' ' * (ind + 8)}{flag} = False"]
    return [f"{' ' * ind}while True:", *self.block(ind + 4, depth + 1, 0, 2),
            f"{' ' * (ind + 4)}if {self.condition(self.var())}:",
            f"{' ' * (ind + 8)}break"]

  def stmt_open(self, ind, depth):
    read = self.chance(0.5)
    stem = self.choice(READ_HINTS if read else WRITE_HINTS) if self.chance(0.75) else self.choice(
        FILE_STEMS)
    q = self.quote()
    ext = self.choice(("txt", "txt", "csv", "log", "json", "md"))
    path = f"{q}{stem}.{ext}{q}" if self.chance(0.7) else self.choice(
        ("path", "filename", "file_path", f"{stem}_path"))
    mode = f"{q}r{q}" if read else f"{q}{self.choice('wwa')}{q}"
    handle = self.choice(("f", "f", "fh", "file", "infile" if read else "outfile"))
    if self.chance(0.75):
      lines = [f"{' ' * ind}with open({path}, {mode}) as {handle}:"]
      inner = ind + 4
    else:  # the assignment form, closed by hand
      lines = [f"{' ' * ind}{handle} = open({path}, {mode})"]
      inner = ind
    if read:
      lines.append(self.choice((f"{' ' * inner}{self.var()} = {handle}.read()",
                                f"{' ' * inner}lines = {handle}.readlines()",
                                f"{' ' * inner}for line in {handle}:")))
      if lines[-1].endswith(":"):
        lines.append(f"{' ' * (inner + 4)}print(line.strip())")
    else:
      lines.append(f"{' ' * inner}{handle}.write({self.choice((self.string(), 'text', 'str(' + self.var() + ')'))})")
    if inner == ind:
      lines.append(f"{' ' * ind}{handle}.close()")
    return lines

  def stmt_swap(self, ind, depth):
    a, b = self.r.sample(("a", "b", "x", "y", "left", "right", "first", "second", "lo", "hi",
                          "i", "j", "old", "new", "p", "q"), 2)
    lines = []
    if self.chance(0.6):
      lines += [f"{' ' * ind}{a} = {self.number()}", f"{' ' * ind}{b} = {self.number()}"]
    lines.append(f"{' ' * ind}{a}, {b} = {b}, {a}")
    return lines + self.maybe_use(ind, a)

  def stmt_lambda(self, ind, depth):
    name = self.choice(("square", "double", "add", "inc", "half", "key_fn", "is_even", "get_name",
                        "negate", "area", "to_upper", self.func_name()))
    arg = self.choice(("x", "n", "s", "item", "value", "a", "p"))
    body = self.choice((f"{arg} * {arg}", f"{arg} + 1", f"{arg} * 2", f"{arg} % 2 == 0",
                        f"{arg}[0]", f"{arg}.upper()", f"-{arg}", f"{arg} / 2"))
    roll = self.r.random()
    if roll < 0.5:
      return [f"{' ' * ind}{name} = lambda {arg}: {body}",
              f"{' ' * ind}print({name}({self.number()}))"]
    if roll < 0.75:
      src = self.plural()
      return [f"{' ' * ind}{src} = sorted({src}, key=lambda {arg}: {body})"]
    return [f"{' ' * ind}def {name}({arg}):", f"{' ' * (ind + 4)}return {body}"]

  def stmt_bool_check(self, ind, depth):
    flag = self.choice(("done", "found", "valid", "ready", "is_ok", "enabled", "visible",
                        "changed", "flag", "empty"))
    value = self.choice(("True", "False"))
    lines = [f"{' ' * ind}{flag} = {value}"]
    if self.chance(0.7):
      lines.append(f"{' ' * ind}if {flag} == {self.choice(('True', 'False'))}:")
      lines += self.block(ind + 4, depth + 1, 1, 1)
    return lines

  def stmt_accumulate(self, ind, depth):
    total, it, src = self.choice(("total", "count", "result", "acc", "s")), self.noun(), None
    src = self.plural(it)
    return [f"{' ' * ind}{total} = 0", f"{' ' * ind}for {it} in {src}:",
            f"{' ' * (ind + 4)}{total} += {it}", *self.maybe_use(ind, total)]

  def statements(self) -> list[Callable]:
    return [self.stmt_assign, self.stmt_print, self.stmt_list, self.stmt_dict,
            self.stmt_set_or_string, self.stmt_if, self.stmt_ternary, self.stmt_for,
            self.stmt_while, self.stmt_open, self.stmt_swap, self.stmt_lambda,
            self.stmt_bool_check, self.stmt_accumulate]

  def block(self, ind, depth, lo, hi) -> list[str]:
    """lo..hi statements at an indent; compound statements only while shallow."""
    n = self.r.randint(lo, hi) if depth < 4 else lo
    if n == 0:
      return [f"{' ' * ind}{self.choice(('pass', 'print(' + self.var() + ')', 'continue'))}"
              if depth > 0 else f"{' ' * ind}pass"]
    simple = [self.stmt_assign, self.stmt_print, self.stmt_swap, self.stmt_ternary,
              self.stmt_accumulate]
    pool = self.statements() if depth < 3 else simple
    # Swaps are short and need many examples to be learned: they are drawn more often.
    pool = pool + [self.stmt_swap]
    lines = []
    for _ in range(n):
      lines += self.choice(pool)(ind, depth)
    return lines

  # -------------------------------------------------------------- top-level items
  def params(self) -> tuple[list[str], list[str]]:
    """Positional parameters, then keyword parameters with defaults (never the other way)."""
    names = self.r.sample(("x", "y", "n", "name", "items", "value", "text", "count", "data",
                           "path", "key", "size", "limit", "step", "scale", "prefix", "sep",
                           "verbose", "default", "mode", "start", "end", "flag", "label"),
                          self.r.randint(0, 5))
    # Most functions take positional arguments only; some end with one to three keyword ones,
    # which often share a default.
    n_kw = self.r.randint(1, min(3, len(names))) if names and self.chance(0.35) else 0
    pos, kw = names[:len(names) - n_kw], names[len(names) - n_kw:]
    shared = self.choice(("None", "None", "None", "0", "True", "False"))
    defaults = [shared if self.chance(0.7) else self.choice(
        ("None", "0", "1", "True", "False", self.string(), "[]", self.number())) for _ in kw]
    return pos, [f"{k}={d}" for k, d in zip(kw, defaults)]

  def function(self, ind=0, method=False) -> list[str]:
    pos, kw = self.params()
    if method:
      pos = ["self"] + pos
    name = self.func_name()
    head = f"{' ' * ind}def {name}({', '.join(pos + kw)}):"
    lines = [head]
    if self.chance(0.25):
      lines.append(f'{" " * (ind + 4)}"""{self.choice(VERBS).capitalize()} the {self.plural()}."""')
    lines += self.block(ind + 4, 1, 1, 4)
    roll = self.r.random()
    if roll < 0.2:
      lines.append(f"{' ' * (ind + 4)}return True")
    elif roll < 0.3:
      lines.append(f"{' ' * (ind + 4)}return False")
    elif roll < 0.8:
      lines.append(f"{' ' * (ind + 4)}return {self.choice((self.var(), self.literal()))}")
    return lines

  def klass(self) -> list[str]:
    name = self.choice(CLASS_NAMES)
    attrs = self.r.sample(("name", "age", "x", "y", "items", "count", "size", "color", "price",
                           "title", "owner", "speed", "level", "score", "value", "data",
                           "balance", "width", "height", "label"), self.r.randint(1, 4))
    lines = [f"class {name}:" if self.chance(0.8) else f"class {name}(object):"]
    n_default = self.r.randint(0, len(attrs)) if self.chance(0.4) else 0
    sig = attrs[: len(attrs) - n_default] + [f"{a}={self.choice(('None', '0', '[]', self.string()))}"
                                             for a in attrs[len(attrs) - n_default:]]
    lines.append(f"    def __init__(self, {', '.join(sig)}):")
    for a in attrs:
      lines.append(f"        self.{a} = {a}")
    if self.chance(0.3):
      lines.append(f"        self.{self.choice(('history', 'cache', 'children', 'tags'))} = []")
    for _ in range(self.r.randint(0, 2)):
      lines.append("")
      if self.chance(0.5):
        a = self.choice(attrs)
        q = self.quote()
        lines += ["    def describe(self):" if self.chance(0.5) else "    def show(self):",
                  f"        print(f{q}{name} {a}: {{self.{a}}}{q})"]
      else:
        lines += self.function(ind=4, method=True)
    return lines

  def script(self) -> list[str]:
    lines = self.block(0, 0, 2, 5)
    if self.chance(0.3):
      lines = ["if __name__ == \"__main__\":"] + ["    " + l if l else l for l in lines]
    return lines

  def program(self) -> str:
    items = []
    if self.chance(0.15):
      items.append([self.choice(("import os", "import sys", "import math", "import random",
                                 "from collections import Counter", "import json"))])
    for _ in range(self.r.randint(1, 3)):
      roll = self.r.random()
      if roll < 0.45:
        items.append(self.function())
      elif roll < 0.7:
        items.append(self.klass())
      else:
        items.append(self.script())
    return "\n\n".join("\n".join(item) for item in items) + "\n"


def document(seed: int, index: int) -> str:
  """Program ``index`` of the stream with ``seed`` (independent of every other index)."""
  rng = random.Random(f"sparsejax-corpus/{seed}/{index}")
  return Gen(rng).program()


def generate_documents(seed: int, n: int, start: int = 0) -> list[str]:
  return [document(seed, i) for i in range(start, start + n)]


def iter_documents(seed: int, start: int = 0) -> Iterator[str]:
  """The unlimited stream of programs for ``seed``."""
  i = start
  while True:
    yield document(seed, i)
    i += 1
