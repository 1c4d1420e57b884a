"""A built-in, offline generator of simple, repetitive Python programs.

In the spirit of the paper's "TinyStories for Python" data (Gao et al. 2025, App. A.6): short
modules made of functions, classes and scripts that use, over and over, the idioms the paper's 20
pruning tasks probe — quotes of both styles, default arguments, ``set()`` vs string accumulators,
``__init__`` attribute copies, ``with open(...) as f`` in read and write modes, nested lists and
dicts, for / while loops, if / elif / else, ternaries, f-strings, swaps, lambdas, ``enumerate`` /
``range``, ``== True`` checks, ``while True`` / ``return True`` — with names, literals, nesting and
lengths drawn at random, so that no idiom is tied to one template.

The vocabulary here is the corpus's own: the task generators (:mod:`sparsejax.tasks`) keep
independent word lists, and their held-out ("ood") names, literals and statements never occur here,
so a model can solve a task only by having learned its idiom.

Construction: every statement is built at indent 0 and a block indents its body once
(:func:`indent`); every distribution is a weighted table (:class:`Table`). Everything is a pure
function of the seed: ``generate_documents(seed, n)`` always returns the same programs, and
``document(seed, i)`` is document i of that stream (random access, so a corpus can be built in
parallel or resumed).
"""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Callable, Iterator, Sequence

# ------------------------------------------------------------------ vocabulary
NOUNS = (
    "item", "value", "number", "name", "word", "line", "row", "record", "user", "score", "price",
    "count", "total", "result", "text", "message", "key", "entry", "point", "node", "city",
    "color", "animal", "book", "order", "task", "file", "label", "token", "grade", "step", "size",
    "level", "player", "student", "product", "letter", "digit", "page", "event", "card", "song",
    "movie", "team", "room", "car", "box", "match", "group", "cell", "shape", "tag", "note", "part",
    "field", "query", "friend", "house", "planet", "fruit",
)
PLURALS = {n: n + "s" for n in NOUNS}
PLURALS.update({"city": "cities", "entry": "entries", "box": "boxes", "match": "matches",
                "query": "queries"})
VERBS = (
    "get", "compute", "load", "save", "parse", "build", "process", "update", "find", "count",
    "check", "make", "add", "remove", "show", "format", "collect", "filter", "merge", "clean",
    "sort", "scale", "print", "read", "write", "convert", "split", "join", "average", "sum",
    "draw", "send", "render", "apply", "store",
)
CLASS_NAMES = (
    "Point", "User", "Account", "Counter", "Stack", "Queue", "Item", "Node", "Config", "Player",
    "Car", "Book", "Student", "Shape", "Animal", "Order", "Task", "Timer", "Box", "Game", "Robot",
    "Library", "Inventory", "Recipe", "Team", "Course", "Ticket", "Wallet", "Garden", "Song",
    "Movie", "Planet", "Vector", "Circle", "Rectangle", "Bank", "Store", "Engine", "Cart",
)
WORDS = (
    "hello", "world", "apple", "banana", "cherry", "red", "green", "blue", "cat", "dog", "bird",
    "alpha", "beta", "gamma", "yes", "no", "done", "start", "stop", "error", "ok", "python",
    "data", "spam", "eggs", "foo", "bar", "baz", "north", "south", "east", "west", "sun", "moon",
    "tea", "cake", "rock", "tree", "river", "stone", "light", "dark", "fast", "slow", "big",
    "small", "good", "bad", "orange", "lemon", "milk", "bread", "fish", "snow", "rain", "wind",
    "gold", "silver", "open", "closed", "new", "old", "hot", "cold", "happy", "sad",
)
# File names say how a file is opened: read-like names are read ('r'), write-like ones written
# ('w' / 'a'); neutral stems go either way.
READ_NAMES = ("input", "source", "data", "raw", "config", "settings", "template", "incoming",
              "params", "defaults", "sample", "dictionary")
WRITE_NAMES = ("output", "result", "results", "report", "summary", "export", "log", "backup",
               "archive", "out", "saved", "final")
NEUTRAL_STEMS = ("notes", "names", "scores", "words", "users", "items", "cache", "list",
                 "records", "text", "numbers", "people")
PARAMS = ("x", "y", "n", "name", "items", "value", "text", "count", "data", "path", "key", "size",
          "limit", "step", "scale", "prefix", "sep", "verbose", "default", "mode", "start", "end",
          "flag", "label", "factor", "offset", "index", "total", "message", "debug")
ATTRS = ("name", "age", "x", "y", "items", "count", "size", "color", "price", "title", "owner",
         "speed", "level", "score", "value", "data", "balance", "width", "height", "label",
         "radius", "year", "email", "city", "status")
FLAG_NAMES = ("done", "found", "valid", "ready", "is_ok", "enabled", "visible", "changed", "flag",
              "empty", "finished", "success", "debug", "loaded")
LOOP_FLAGS = ("running", "active", "waiting", "searching", "ok", "busy", "alive")
CALLEES = ("log", "show", "say", "warn", "greet", "display", "notify", "info", "add_item",
           "set_title")
SWAP_NAMES = ("a", "b", "x", "y", "left", "right", "first", "second", "lo", "hi", "i", "j", "old",
              "new", "p", "q", "top", "bottom", "m", "n")


# Idioms the paper's 20 tasks probe, as patterns over generated source. The corpus test asserts
# each one appears, so a change to the generator cannot silently drop one.
IDIOMS = {
    "double_quoted_string_arg": r'\("[^"\n]*"\)',
    "single_quoted_string_arg": r"\('[^'\n]*'\)",
    "keyword_default_after_positional": r"def \w+\(\w+, \w+=",
    "keyword_default_after_keyword": r"def \w+\(.*\w+=None, \w+=None",
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
    "lambda_two_args": r"lambda \w+, \w+: ",
    "def_function": r"def \w+\(",
    "if_equals": r"if \w+ == \w+:",
    "assign_equals": r"\n\s*\w+ = \d+\n",
    "enumerate_loop": r"for \w+, \w+ in enumerate\(",
    "range_loop": r"for \w+ in range\(",
    "bool_equals_check": r"if \w+ == (True|False):",
    "bool_assignment": r"\w+ = (True|False)\n",
}


def indent(lines: Sequence[str], levels: int = 1) -> list[str]:
  """Lines indented by ``levels`` × 4 spaces (blank lines stay blank)."""
  pad = "    " * levels
  return [pad + line if line else line for line in lines]


class Table:
  """A weighted table ``{option: weight}``: :meth:`draw` returns an option with probability
  proportional to its weight, using one uniform draw (so the stream stays reproducible)."""

  def __init__(self, weights: dict):
    self.options = list(weights)
    self.cumulative = list(itertools.accumulate(weights.values()))

  def draw(self, rng: random.Random):
    return self.options[bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])]


class Gen:
  """One program's worth of random choices. Every method returns source lines at indent 0 (no
  newline) or a piece of a line; blocks are indented once by the statement that holds them."""

  def __init__(self, rng: random.Random):
    self.r = rng

  # -------------------------------------------------------------- small pieces
  def choice(self, seq):
    return self.r.choice(seq)

  def chance(self, p: float) -> bool:
    return self.r.random() < p

  def draw(self, table: Table, *args):
    """An option of ``table``; a callable option is called with this Gen and ``args``."""
    option = table.draw(self.r)
    return option(self, *args) if callable(option) else option

  def noun(self) -> str:
    return self.choice(NOUNS)

  def plural(self, noun: str | None = None) -> str:
    return PLURALS[noun or self.noun()]

  def var(self) -> str:
    """A variable name: a noun, sometimes with a prefix or a digit."""
    return self.draw(_VAR_FORMS)

  def func_name(self) -> str:
    return f"{self.choice(VERBS)}_{self.choice((self.noun(), self.plural()))}"

  def quote(self) -> str:
    return self.choice(('"', "'"))

  def words(self, lo: int = 1, hi: int = 3) -> str:
    return " ".join(self.choice(WORDS) for _ in range(self.r.randint(lo, hi)))

  def string(self, q: str | None = None) -> str:
    q = q or self.quote()
    body = self.words()
    if self.chance(0.15):
      body = body.capitalize() + self.choice(("!", ".", "?", ":"))
    return f"{q}{body}{q}"

  def number(self) -> str:
    return self.draw(_NUMBER_FORMS)

  def literal(self) -> str:
    return self.draw(_LITERAL_FORMS)

  def flat_list(self, n: int | None = None, kind: str | None = None) -> str:
    n = self.r.randint(0, 5) if n is None else n
    kind = kind or self.choice(("num", "str"))
    q = self.quote()
    items = [self.number() if kind == "num" else self.string(q) for _ in range(n)]
    return "[" + ", ".join(items) + "]"

  def nested_list(self, depth: int) -> str:
    if depth <= 1:
      return self.flat_list(self.r.randint(1, 4), "num")
    n = self.r.randint(1, 4)
    parts = [self.nested_list(depth - 1) if self.chance(0.6) else self.number()
             for _ in range(n)]
    if not any(p.startswith("[") for p in parts):
      parts[self.r.randrange(n)] = self.nested_list(depth - 1)
    return "[" + ", ".join(parts) + "]"

  def dict_literal(self, n: int | None = None) -> str:
    n = self.r.randint(1, 4) if n is None else n
    q = self.quote()
    keys = self.r.sample(WORDS, n)
    vals = [self.literal() if self.chance(0.7) else self.flat_list(self.r.randint(1, 3))
            for _ in range(n)]
    return "{" + ", ".join(f"{q}{k}{q}: {v}" for k, v in zip(keys, vals)) + "}"

  def condition(self, name: str) -> str:
    return self.draw(_CONDITION_FORMS).format(name=name, number=self.number(),
                                              string=self.string())

  def file_name(self, read: bool) -> str:
    """A file name that says how the file is opened (or, a quarter of the time, does not)."""
    stem = self.draw(_FILE_STEMS, self.choice(READ_NAMES if read else WRITE_NAMES))
    return f"{stem}.{self.choice(('txt', 'txt', 'csv', 'log', 'json', 'md'))}"

  # -------------------------------------------------------------- statements (indent 0)
  def stmt_assign(self, depth):
    name = self.var()
    return [f"{name} = {self.literal()}", *self.maybe_use(name)]

  def maybe_use(self, name):
    return [f"print({name})"] if self.chance(0.4) else []

  def stmt_print(self, depth):
    return self.draw(_PRINT_FORMS)

  def print_string(self):
    return [f"print({self.string()})"]

  def print_fstring(self):
    q, name = self.quote(), self.var()
    return [f"{name} = {self.number()}", f"print(f{q}{self.words(1, 3)} {{{name}}}{q})"]

  def print_string_and_name(self):
    q, name = self.quote(), self.var()
    return [f"print({q}{self.words(1, 3)}{q}, {name})"]

  def print_words_in_string(self):
    q = self.quote()
    return [f"print({q}{self.words(1, 2)} {self.var()}{q})"]

  def print_formatted(self):
    q, name, other = self.quote(), self.var(), self.var()
    return [f"{name} = {self.string()}",
            f"{other} = f{q}{self.choice(WORDS).capitalize()}: {{{name}}}!{q}", f"print({other})"]

  def stmt_call_string(self, depth):
    """A call with one string argument, as in `log("file saved")`."""
    return [f"{self.choice(CALLEES)}({self.string()})"]

  def stmt_list(self, depth):
    name = self.plural()
    rows = self.draw(_LIST_FORMS)
    lines = [f"{name} = {rows[0]}"] if len(rows) == 1 else [
        f"{name} = [", *indent([row + "," for row in rows[:-1]] + [rows[-1]]), "]"]
    if self.chance(0.3):
      lines.append(f"{name}.append({self.number()})")
    return lines

  def stmt_dict(self, depth):
    name = self.choice(("config", "counts", "scores", "prices", "ages", "table", "lookup",
                        "options", "settings", self.noun() + "_map", self.plural()))
    return [f"{name} = {self.dict_literal()}", *self.draw(_DICT_FOLLOW, name)]

  def stmt_set_or_string(self, depth, name=None):
    name = name or self.choice((self.var(), "seen", "letters", "names", "words", "current",
                                "result", "output", "parts", "current"))
    src, it = self.plural(), self.noun()
    lines = [f"{src} = {self.flat_list(self.r.randint(2, 5), 'str')}"] if self.chance(0.5) else []
    if self.chance(0.5):
      body = ([f"if {it} not in {name}:", *indent([f"{name}.add({it})"])] if self.chance(0.3)
              else [f"{name}.add({it})"])
      lines += [f"{name} = set()", f"for {it} in {src}:", *indent(body)]
    else:
      q = self.quote()
      lines += [f"{name} = {q}{q}", f"for {it} in {src}:", *indent([f"{name} += {it}"])]
    if self.chance(0.5):
      lines.append(f"print({name})")
    return lines

  def stmt_if(self, depth):
    name = self.var()
    lines = [f"{name} = {self.number()}"] if self.chance(0.6) else []
    lines += [f"if {self.condition(name)}:", *indent(self.block(depth + 1, 1, 2))]
    for _ in range(self.r.randint(0, 2)):
      lines += [f"elif {self.condition(name)}:", *indent(self.block(depth + 1, 1, 2))]
    if self.chance(0.6):
      lines += ["else:", *indent(self.block(depth + 1, 1, 2))]
    return lines

  def stmt_ternary(self, depth):
    name, target = self.var(), self.var()
    lines = [f"{name} = {self.number()}"] if self.chance(0.5) else []
    lines.append(f"{target} = {self.literal()} if {self.condition(name)} else {self.literal()}")
    return lines + self.maybe_use(target)

  def stmt_for(self, depth):
    it = self.noun()
    return self.draw(_FOR_HEADERS, it, self.plural(it)) + indent(self.block(depth + 1, 1, 3))

  def stmt_while(self, depth):
    return self.draw(_WHILE_FORMS, depth)

  def while_counter(self, depth):
    name = self.choice(("i", "n", "count", "steps", "tries"))
    return [f"{name} = 0", f"while {name} < {self.number()}:",
            *indent(self.block(depth + 1, 0, 2) + [f"{name} += 1"])]

  def while_queue(self, depth):
    queue = self.plural()
    return [f"while {queue}:",
            *indent([f"{self.noun()} = {queue}.pop()", *self.block(depth + 1, 0, 1)])]

  def while_chain(self, depth):  # walk a chain: the loop variable is a noun, as in `for node in`
    node = self.noun()
    step = f"{node} = {node}.{self.choice(('next', 'parent', 'child'))}"
    return [f"while {node}:", *indent(self.block(depth + 1, 0, 1) + [step])]

  def while_flag(self, depth):
    flag = self.choice(LOOP_FLAGS)
    stop = [f"if {self.condition(self.var())}:", *indent([f"{flag} = False"])]
    return [f"{flag} = True", f"while {flag}:", *indent(self.block(depth + 1, 0, 2) + stop)]

  def while_true(self, depth):
    stop = [f"if {self.condition(self.var())}:", *indent(["break"])]
    return ["while True:", *indent(self.block(depth + 1, 0, 2) + stop)]

  def stmt_open(self, depth):
    read = self.chance(0.5)
    q = self.quote()
    path = (f"{q}{self.file_name(read)}{q}" if self.chance(0.75) else
            self.choice(("path", "filename", "file_path", f"{self.choice(NEUTRAL_STEMS)}_path")))
    mode = f"{q}r{q}" if read else f"{q}{self.choice('wwa')}{q}"
    handle = self.choice(("f", "f", "fh", "file", "infile" if read else "outfile"))
    body = self.draw(_READ_BODIES if read else _WRITE_BODIES, handle)
    if self.chance(0.75):
      return [f"with open({path}, {mode}) as {handle}:", *indent(body)]
    return [f"{handle} = open({path}, {mode})", *body, f"{handle}.close()"]  # closed by hand

  def stmt_swap(self, depth):
    a, b = self.r.sample(SWAP_NAMES, 2)
    lines = [f"{a} = {self.number()}", f"{b} = {self.number()}"] if self.chance(0.6) else []
    lines.append(f"{a}, {b} = {b}, {a}")
    return lines + self.maybe_use(a)

  def stmt_lambda(self, depth):
    name = self.choice(("square", "double", "add", "inc", "half", "key_fn", "is_even", "get_name",
                        "negate", "area", "to_upper", "combine", "product", self.func_name()))
    a, b = self.r.sample(("x", "n", "s", "item", "value", "a", "b", "p", "k"), 2)
    return self.draw(_LAMBDA_FORMS, name, a, b)

  def one_arg_body(self, a):
    return self.choice((f"{a} * {a}", f"{a} + 1", f"{a} * 2", f"{a} % 2 == 0", f"{a}[0]",
                        f"{a}.upper()", f"-{a}", f"{a} / 2"))

  def two_arg_body(self, a, b):
    return self.choice((f"{a} + {b}", f"{a} * {b}", f"max({a}, {b})", f"{a} - {b}"))

  def stmt_bool_check(self, depth):
    flag = self.choice(FLAG_NAMES)
    lines = [f"{flag} = {self.choice(('True', 'False'))}"]
    if self.chance(0.7):
      lines += [f"if {flag} == {self.choice(('True', 'False'))}:",
                *indent(self.block(depth + 1, 1, 1))]
    return lines

  def stmt_accumulate(self, depth):
    total, it = self.choice(("total", "count", "result", "acc", "s")), self.noun()
    return [f"{total} = 0", f"for {it} in {self.plural(it)}:", *indent([f"{total} += {it}"]),
            *self.maybe_use(total)]

  def block(self, depth, lo, hi) -> list[str]:
    """lo..hi statements (indent 0, for the caller to indent); compound ones only while shallow."""
    n = self.r.randint(lo, hi) if depth < 4 else lo
    if n == 0:
      return [self.choice(("pass", f"print({self.var()})", "continue")) if depth > 0 else "pass"]
    table = _STATEMENTS if depth < 3 else _SIMPLE_STATEMENTS
    return [line for _ in range(n) for line in self.draw(table, depth)]

  # -------------------------------------------------------------- top-level items
  def params(self) -> tuple[list[str], list[str]]:
    """Positional parameters, then keyword parameters with defaults (never the other way)."""
    names = self.r.sample(PARAMS, self.r.randint(0, 5))
    # Most functions take positional arguments only; some end with one to three keyword ones,
    # which often share a default.
    n_kw = self.r.randint(1, min(3, len(names))) if names and self.chance(0.35) else 0
    pos, kw = names[:len(names) - n_kw], names[len(names) - n_kw:]
    shared = self.draw(_SHARED_DEFAULTS)
    defaults = [shared if self.chance(0.7) else self.draw(_DEFAULTS) for _ in kw]
    return pos, [f"{k}={d}" for k, d in zip(kw, defaults)]

  def function(self, method=False) -> list[str]:
    pos, kw = self.params()
    if method:
      pos = ["self"] + pos
    body = ([f'"""{self.choice(VERBS).capitalize()} the {self.plural()}."""']
            if self.chance(0.25) else [])
    body += self.block(1, 1, 4)
    ret = self.draw(_RETURN_FORMS)
    return [f"def {self.func_name()}({', '.join(pos + kw)}):", *indent(body + ret)]

  def klass(self) -> list[str]:
    name = self.choice(CLASS_NAMES)
    attrs = self.r.sample(ATTRS, self.r.randint(1, 4))
    n_default = self.r.randint(0, len(attrs)) if self.chance(0.4) else 0
    sig = attrs[:len(attrs) - n_default] + [
        f"{a}={self.choice(('None', 'None', '0', '[]', self.string()))}"
        for a in attrs[len(attrs) - n_default:]]
    init = [f"self.{a} = {a}" for a in attrs]
    if self.chance(0.3):
      init.append(f"self.{self.choice(('history', 'cache', 'children', 'tags'))} = []")
    body = [f"def __init__(self, {', '.join(sig)}):", *indent(init)]
    for _ in range(self.r.randint(0, 2)):
      body.append("")
      if self.chance(0.5):
        a, q = self.choice(attrs), self.quote()
        body += [self.choice(("def describe(self):", "def show(self):")),
                 *indent([f"print(f{q}{name} {a}: {{self.{a}}}{q})"])]
      else:
        body += self.function(method=True)
    header = f"class {name}:" if self.chance(0.8) else f"class {name}(object):"
    return [header, *indent(body)]

  def script(self) -> list[str]:
    lines = self.block(0, 2, 5)
    if self.chance(0.3):
      lines = ['if __name__ == "__main__":', *indent(lines)]
    return lines

  def program(self) -> str:
    items = []
    if self.chance(0.15):
      items.append([self.choice(("import os", "import sys", "import math", "import random",
                                 "from collections import Counter", "import json"))])
    for _ in range(self.r.randint(1, 3)):
      items.append(self.draw(_ITEM_FORMS))
    return "\n\n".join("\n".join(item) for item in items) + "\n"


# ------------------------------------------------------------------ the weighted tables
_VAR_FORMS = Table({
    lambda g: g.noun(): 7,
    lambda g: g.choice(("new", "old", "my", "first", "last", "max", "min", "next")) + "_"
    + g.noun(): 2,
    lambda g: g.noun() + str(g.r.randint(1, 3)): 1,
})
_NUMBER_FORMS = Table({
    lambda g: str(g.r.randint(0, 20)): 60,
    lambda g: str(g.r.randint(21, 1000)): 25,
    lambda g: f"{g.r.randint(0, 99)}.{g.r.randint(0, 99)}": 15,
})
_LITERAL_FORMS = Table({
    Gen.number: 45,
    Gen.string: 40,
    lambda g: g.choice(("True", "False", "None")): 15,
})
_CONDITION_FORMS = Table({
    "{name} == {number}": 30, "{name} > {number}": 20, "{name} < {number}": 10,
    "{name} != {number}": 10, "{name} == {string}": 10, "{name} % 2 == 0": 10, "not {name}": 10,
})
_PRINT_FORMS = Table({
    Gen.print_string: 30, Gen.print_fstring: 25, Gen.print_string_and_name: 15,
    Gen.print_words_in_string: 10, Gen.print_formatted: 20,
})
_LIST_FORMS = Table({
    lambda g: [g.flat_list()]: 40,
    lambda g: [g.nested_list(g.r.randint(2, 3))]: 35,
    # a multi-line nested list: rows end with "]," / "]]" / "]\n"
    lambda g: [g.nested_list(g.r.randint(1, 2)) for _ in range(g.r.randint(2, 4))]: 25,
})
_WHILE_FORMS = Table({
    Gen.while_counter: 40, Gen.while_queue: 10, Gen.while_chain: 10, Gen.while_flag: 15,
    Gen.while_true: 25,
})
_SIMPLE_STATEMENTS = Table({
    Gen.stmt_assign: 1, Gen.stmt_print: 1, Gen.stmt_call_string: 0.5, Gen.stmt_swap: 1,
    Gen.stmt_ternary: 1, Gen.stmt_accumulate: 1,
})
# Swaps are short and need many examples to be learned: they are drawn twice as often.
_STATEMENTS = Table({
    Gen.stmt_assign: 1, Gen.stmt_print: 1, Gen.stmt_call_string: 0.5, Gen.stmt_list: 1,
    Gen.stmt_dict: 1, Gen.stmt_set_or_string: 1, Gen.stmt_if: 1, Gen.stmt_ternary: 1,
    Gen.stmt_for: 1, Gen.stmt_while: 1, Gen.stmt_open: 1, Gen.stmt_swap: 2, Gen.stmt_lambda: 1,
    Gen.stmt_bool_check: 1, Gen.stmt_accumulate: 1,
})
_SHARED_DEFAULTS = Table({"None": 3, "0": 1, "True": 1, "False": 1})
_DEFAULTS = Table({"None": 1, "0": 1, "1": 1, "True": 1, "False": 1, Gen.string: 1, "[]": 1,
                   Gen.number: 1})
_RETURN_FORMS = Table({
    lambda g: ["return True"]: 20,
    lambda g: ["return False"]: 10,
    lambda g: [f"return {g.choice((g.var(), g.literal()))}"]: 50,
    lambda g: []: 20,
})
_ITEM_FORMS = Table({Gen.function: 45, Gen.klass: 25, Gen.script: 30})
_FILE_STEMS = Table({  # (g, cue word) -> file stem
    lambda g, cue: cue: 5,
    lambda g, cue: f"{cue}_{g.choice(NEUTRAL_STEMS)}": 2,
    lambda g, cue: f"{g.choice(NEUTRAL_STEMS)}_{cue}": 1,
    lambda g, cue: g.choice(NEUTRAL_STEMS): 2,
})
_READ_BODIES = Table({  # (g, handle) -> lines
    lambda g, h: [f"{g.var()} = {h}.read()"]: 1,
    lambda g, h: [f"lines = {h}.readlines()"]: 1,
    lambda g, h: [f"for line in {h}:", *indent(["print(line.strip())"])]: 1,
})
_WRITE_BODIES = Table({
    lambda g, h: [f"{h}.write({g.string()})"]: 1,
    lambda g, h: [f"{h}.write(text)"]: 1,
    lambda g, h: [f"{h}.write(str({g.var()}))"]: 1,
})
_DICT_FOLLOW = Table({  # (g, dict name) -> lines after the literal
    lambda g, name: [f"{name}[{(q := g.quote())}{g.choice(WORDS)}{q}] = {g.literal()}"]: 3,
    lambda g, name: [f"for key, value in {name}.items():", *indent(["print(key, value)"])]: 2,
    lambda g, name: []: 5,
})
_FOR_HEADERS = Table({  # (g, item noun, its plural) -> lines ending with the for header
    lambda g, it, src: ([f"{src} = {g.flat_list(g.r.randint(1, 4))}"] if g.chance(0.5) else [])
    + [f"for {it} in {src}:"]: 4,
    lambda g, it, src: [f"for {g.choice(('i', 'j', 'n', 'k', 'index'))} in range("
                        f"{g.choice((g.number(), 'len(' + src + ')', g.var()))}):"]: 3,
    lambda g, it, src: [f"for {g.choice(('i', 'index', 'n', 'pos', 'j', 'idx'))}, {it} in "
                        f"enumerate({src}):"]: 3,
})
_LAMBDA_FORMS = Table({  # (g, name, first argument, second argument) -> lines
    lambda g, name, a, b: [f"{name} = lambda {a}: {g.one_arg_body(a)}",
                           f"print({name}({g.number()}))"]: 3,
    lambda g, name, a, b: [f"{name} = lambda {a}, {b}: {g.two_arg_body(a, b)}",
                           f"print({name}({g.number()}, {g.number()}))"]: 2,
    lambda g, name, a, b: [f"{(src := g.plural())} = sorted({src}, key=lambda {a}: "
                           f"{g.one_arg_body(a)})"]: 2,
    lambda g, name, a, b: [f"def {name}({a}):", *indent([f"return {g.one_arg_body(a)}"])]: 2,
    lambda g, name, a, b: [f"def {name}({a}, {b}):",
                           *indent([f"return {g.two_arg_body(a, b)}"])]: 1,
})


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
