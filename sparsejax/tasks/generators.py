"""The paper's 20 binary next-token Python tasks (Gao et al. 2025, Table 1), written from scratch.

The official task generators were never released; these follow the paper's one-line descriptions.
Every task produces *pairs* of contexts that form a minimal contrast and need different next
tokens: for context A the correct continuation is ``completion_a`` and the alternative is
``completion_b``; for context B it is the other way round. A model that always prefers one of the
two tokens therefore gets exactly half of the sequences right.

Each generator is registered with its description, expected decisive tokens, the bound on the
token edit distance between its two contexts and its flags (:mod:`sparsejax.tasks.registry`);
:func:`sparsejax.tasks.batch.encode_pairs` enforces them for a tokenizer. Names, literals and the
surrounding code come from a :class:`~sparsejax.tasks.surface.Draw`, whose vocabulary is written
independently of the corpus generator; the "ood" split draws held-out names, literals, statements,
longer contexts and distractors. Plain Python: no jax.

The bounds below are in tokens of a BPE with the official pre-tokenizer (punctuation runs absorb a
trailing newline, letters take at most one leading non-letter), which is what fixes several of the
decisive tokens (see with_as, lambda_func).
"""

from __future__ import annotations

from typing import Sequence

from sparsejax.tasks.registry import FLAGS  # noqa: F401 (re-exported)
from sparsejax.tasks.registry import LAST_TOKEN_DIFFERS
from sparsejax.tasks.registry import SPLITS  # noqa: F401 (re-exported)
from sparsejax.tasks.registry import Task
from sparsejax.tasks.registry import TaskPair
from sparsejax.tasks.registry import TaskRegistry
from sparsejax.tasks.surface import Draw

TASKS = TaskRegistry()
task = TASKS.register

# Read-like and write-like file names: the cue of with_open (the idiom itself, so the same words
# on every split; "ood" embeds them in held-out names).
READ_WORDS = ("input", "source", "data", "raw", "config", "settings", "template")
WRITE_WORDS = ("output", "result", "report", "summary", "results", "export")


# ------------------------------------------------------------------ the 20 tasks
@task("single_double_quote", expected=('")\n', "')\n"), max_edit=1,
      description="Close a string with the quote it was opened with: `(\"` ... `\")` vs `('` ... "
      "`')`. The contexts differ only in the opening `(\"` / `('`. ood: a comment with a quote "
      "before the call.")
def single_double_quote(d: Draw) -> TaskPair:
  comment = f"# {d.word()}{d.quote()}s {d.words(1, 2)}"
  head, ind = d.opening(distractors=[comment])
  ctx = f"{head}{ind}{d.pick(d.v.calls)}(%s{d.words()}"
  return TaskPair(ctx % '"', ctx % "'", '")\n', "')\n")


@task("final_kwarg", expected=("=None", "):\n"), max_edit=1, same_length=False,
      description="A def argument after a keyword argument needs a default: `def f(a, b=None, c` "
      "→ `=None`, `def f(a, b, c` → `):\\n`. The contexts differ in the one `=None` of the "
      "previous argument.")
def final_kwarg(d: Draw) -> TaskPair:
  names = d.sample(d.v.names, d.randint(2, 5 if d.ood else 4))
  *pos, prev, last = names
  head = d.prefix()
  fn = f"{head}def {d.func_name()}({''.join(p + ', ' for p in pos)}{prev}%s, {last}"
  return TaskPair(fn % "=None", fn % "", "=None):\n", "):\n")


def _set_or_string(d: Draw, name: str) -> TaskPair:
  it = d.noun()
  head = d.prefix()
  body = f"for {it} in {d.plural(it)}:\n    "
  if d.ood:  # a longer loop: the use sits in an if inside it
    body += f"if {it}:\n        "
  q = d.quote()
  return TaskPair(f"{head}{name} = set()\n{body}{name}", f"{head}{name} = {q}{q}\n{body}{name}",
                  f".add({it})\n", f" += {it}\n")


@task("set_or_string", expected=(".add", " +="), max_edit=2, same_length=False,
      description="A variable initialised with `set()` grows with `.add`, one initialised with "
      "`\"\"` with ` +=`. The contexts differ in the initialiser only (` set()` is two tokens, "
      "` \"\"` one).")
def set_or_string(d: Draw) -> TaskPair:
  return _set_or_string(d, d.pick(d.v.containers))


@task("set_or_string_fixedvarname", expected=(".add", " +="), max_edit=2, same_length=False,
      description="set_or_string with the variable always named `current`.")
def set_or_string_fixedvarname(d: Draw) -> TaskPair:
  return _set_or_string(d, "current")


@task("class_init", max_edit=4, same_length=False,
      description="In `__init__`, `self.x =` copies the argument of the same name; the contexts "
      "end on `self.a =` vs `self.b =` with the same arguments, so they differ in one attribute. "
      "On ood a held-out attribute can be several tokens (up to 4 apart), and its first token, "
      "the decisive one, can be a bare space.")
def class_init(d: Draw) -> TaskPair:
  n_extra = d.randint(1, 3) if d.ood else d.randint(0, 2)
  attrs = d.sample(d.v.attrs, n_extra + 2)
  *done, a, b = attrs
  args = d.sample(attrs, len(attrs))
  head = (d.prefix() + f"class {d.pick(d.v.classes)}:\n    def __init__(self, {', '.join(args)}):\n"
          + "".join(f"        self.{e} = {e}\n" for e in done))
  return TaskPair(f"{head}        self.{a} =", f"{head}        self.{b} =", f" {a}\n", f" {b}\n")


@task("with_as", expected=(('")', "')"), ('")\n', "')\n")), max_edit=3, same_length=False,
      description="`with open(...)` continues with ` as`, `f = open(...)` ends the line. Under the "
      "official pre-tokenizer the closing quote, `)` and a newline form one token, so the "
      "decisive tokens are `\")` vs `\")\\n` (the paper's ` as` comes one token later). The "
      "contexts differ in `with` vs `f =`.")
def with_as(d: Draw) -> TaskPair:
  q = d.quote()
  stem = d.pick(READ_WORDS + WRITE_WORDS) if not d.ood else f"{d.noun()}_{d.word()}"
  handle = d.pick(d.v.handles)
  head, ind = d.opening()
  call = f"open({q}{stem}.{d.pick(d.v.exts)}{q}, {q}{d.pick('rw')}"
  return TaskPair(f"{head}{ind}with {call}", f"{head}{ind}{handle} = {call}",
                  f"{q}) as {handle}:\n", f"{q})\n")


@task("bracket_brace", expected=(('":', "':"), ('",', "',")), max_edit=1,
      description="Inside a dict a key is followed by `:`, inside a list an item by `,`: "
      "`x = {\"a` vs `x = [\"a`. ood: a comment with brackets and braces before the literal.")
def bracket_brace(d: Draw) -> TaskPair:
  q = d.quote()
  name = d.pick(d.v.containers)
  head, ind = d.opening(distractors=[f"# {d.word()} [{d.word()}] {{{d.word()}}}"])
  ctx = f"{head}{ind}{name} = %s{q}{d.word()}"
  return TaskPair(ctx % "{", ctx % "[", f"{q}: {d.literal()}}}\n",
                  f"{q}, {q}{d.word()}{q}]\n")


@task("with_open", expected=("r", "w"), max_edit=1,
      description="Open mode from the file name: input-like names read (`'r'`), output-like names "
      "write (`'w'`). The contexts differ in the name's cue word; ood embeds it in held-out "
      "names and extensions.")
def with_open(d: Draw) -> TaskPair:
  q = d.quote()
  read, write = d.pick(READ_WORDS), d.pick(WRITE_WORDS)
  ext = d.pick(d.v.exts)
  suffix = f"_{d.noun()}" if d.ood else ""
  handle = d.pick(d.v.handles)
  head, ind = d.opening()
  ctx = f"{head}{ind}with open({q}%s{suffix}.{ext}{q}, {q}"
  return TaskPair(ctx % read, ctx % write, f"r{q}) as {handle}:\n", f"w{q}) as {handle}:\n")


def _list_items(d: Draw, n: int) -> str:
  """``n`` comma-separated small numbers, some of them complete inner lists; the last a number."""
  num = lambda: str(d.randint(0, 99))
  items = []
  for i in range(n):
    if i < n - 1 and d.r.random() < 0.25:
      items.append("[" + ", ".join(num() for _ in range(d.randint(1, 3))) + "]")
    else:
      items.append(num())
  return ", ".join(items)


@task("bracket_counting", expected=("]]\n", "]\n"), max_edit=1,
      description="Close a list by its nesting depth: `]]` after `x = [[...`, `]` after "
      "`x = [...`, where the items may hold complete inner lists (so `[[` alone does not decide). "
      "The contexts differ in the opening bracket only. ood: 10-16 items and a comment with an "
      "unclosed bracket.")
def bracket_counting(d: Draw) -> TaskPair:
  n = d.randint(10, 16) if d.ood else d.randint(1, 9)
  head, ind = d.opening(distractors=[f"# {d.word()} [{d.word()}"], most=0)
  ctx = f"{head}{ind}{d.plural(d.noun())} = %s{_list_items(d, n)}"
  return TaskPair(ctx % "[[", ctx % "[", "]]\n", "]\n")


@task("for_while", expected=(" in", ":\n"), max_edit=1,
      description="`for x` continues with ` in`, `while x` with `:`.")
def for_while(d: Draw) -> TaskPair:
  var = d.noun()
  head, ind = d.opening()
  return TaskPair(f"{head}{ind}for {var}", f"{head}{ind}while {var}", f" in {d.plural(var)}:\n",
                  ":\n")


@task("else_elif", expected=(":\n", None), max_edit=1, flags=(LAST_TOKEN_DIFFERS,),
      description="`else` is followed by `:\\n`, `elif` by a condition. The contexts end on the "
      "keyword itself, so their last tokens differ (inherent to the task, as in the paper).")
def else_elif(d: Draw) -> TaskPair:
  var = d.name()
  head, ind = d.opening()
  block = [f"{var} = {d.number()}", f"if {var} > {d.number()}:",
           f"    {d.name()} = {d.literal()}"]
  head += "".join(f"{ind}{line}\n" for line in block)
  return TaskPair(f"{head}{ind}else", f"{head}{ind}elif", ":\n", f" {var} > {d.number()}:\n")


@task("fstring_brace", expected=(" {", ('",', "',")), max_edit=2, same_length=False,
      description="Inside an f-string a variable is inserted with ` {`; a plain string is "
      "closed instead: `print(f\"total is` vs `print(\"total is`. The label has at least two "
      "words so both contexts end on the same token.")
def fstring_brace(d: Draw) -> TaskPair:
  var = d.name()
  q = d.quote()
  label = d.words(2, 3)
  head, ind = d.opening()
  head += f"{ind}{var} = {d.literal()}\n"
  return TaskPair(f"{head}{ind}print(f{q}{label}", f"{head}{ind}print({q}{label}",
                  f" {{{var}}}{q})\n", f"{q}, {var})\n")


@task("if_ternary", expected=(" else", ":\n"), max_edit=2, same_length=False,
      description="After `y = a if cond` comes ` else`, after `y = a` and a new line `if cond` "
      "comes `:`. The contexts differ only in the line break before `if`.")
def if_ternary(d: Draw) -> TaskPair:
  var, target = d.sample(d.v.names, 2)
  cond = f"{var} {d.pick(('==', '>', '<', '!=', '>=', '<='))} {d.number()}"
  a = d.literal()
  head, ind = d.opening()
  head += f"{ind}{var} = {d.number()}\n"
  assign = f"{head}{ind}{target} = {a}"
  return TaskPair(f"{assign} if {cond}", f"{assign}\n{ind}if {cond}", f" else {d.literal()}\n",
                  f":\n{ind}    {target} = {d.literal()}\n")


@task("var_swap", max_edit=3,
      description="`a, b = b,` completes the swap with ` a`; `b, a = a,` with ` b`. A swap is "
      "symmetric, so the contexts differ in its three names.")
def var_swap(d: Draw) -> TaskPair:
  a, b = d.sample(d.v.short, 2)
  head, ind = d.opening()
  head += f"{ind}{a} = {d.number()}\n{ind}{b} = {d.number()}\n"
  return TaskPair(f"{head}{ind}{a}, {b} = {b},", f"{head}{ind}{b}, {a} = {a},", f" {a}\n",
                  f" {b}\n")


@task("indent_for", max_edit=1,
      description="The body of a `for` is indented one level deeper than the `for` itself: the "
      "contexts differ only in the indentation of the `for` line (inside the outer loop, or "
      "back in the function), so the decisive tokens are the two indents.")
def indent_for(d: Draw) -> TaskPair:
  outer, inner = d.noun(), d.noun()
  head = d.prefix()
  args = ", ".join(d.sample(d.v.names, d.randint(0, 2)))
  head += (f"def {d.func_name()}({args}):\n    for {outer} in {d.plural(outer)}:\n"
           f"        {d.name()} = {d.literal()}\n")
  loop = f"for {inner} in {d.plural(inner)}:\n"
  return TaskPair(f"{head}        {loop}", f"{head}    {loop}", f"            print({inner})\n",
                  f"        print({inner})\n")


@task("lambda_func", expected=(":", "):\n"), max_edit=4, same_length=False,
      description="`f = lambda a, b` continues with `:`, `def f(a, b` with `):`. The contexts end "
      "on the same argument, so the paper's `(` (right after `def f`, where the last tokens "
      "would differ and the bigram table could solve it) becomes `):\\n`.")
def lambda_func(d: Draw) -> TaskPair:
  name = d.pick((d.func_name(), d.pick(d.v.verbs)))
  a, b = d.sample(d.v.short, 2)
  head, ind = d.opening(levels=(1, 2))
  return TaskPair(f"{head}{ind}{name} = lambda {a}, {b}", f"{head}{ind}def {name}({a}, {b}",
                  f": {a} * {b}\n", f"):\n{ind}    return {a} * {b}\n")


@task("if_equals", expected=(" ==", " ="), max_edit=1, same_length=False,
      description="A condition compares with ` ==`, a statement assigns with ` =`: `    if x` vs "
      "`    x` (always indented, so the name is the same token in both).")
def if_equals(d: Draw) -> TaskPair:
  var = d.name()
  head, ind = d.opening(levels=(1, 1, 2))
  value = d.number()
  return TaskPair(f"{head}{ind}if {var}", f"{head}{ind}{var}", f" == {value}:\n", f" = {value}\n")


@task("enumerate_range", expected=(" enumerate", " range"), max_edit=3, same_length=False,
      description="Two loop variables need ` enumerate`, one index needs ` range`: "
      "`for i, x in` vs `for i in`.")
def enumerate_range(d: Draw) -> TaskPair:
  idx, it = (d.sample(d.v.short, 2) if d.ood else
             (d.pick(("i", "j", "k", "n", "idx", "pos", "index")), d.noun()))
  head, ind = d.opening()
  src = d.plural(d.noun())
  return TaskPair(f"{head}{ind}for {idx}, {it} in", f"{head}{ind}for {idx} in",
                  f" enumerate({src}):\n", f" range(len({src})):\n")


@task("var_if", expected=(":\n", "\n"), max_edit=2, same_length=False,
      description="`if flag == True` continues with `:`, `flag = True` ends the line (always "
      "indented, so the flag is the same token in both).")
def var_if(d: Draw) -> TaskPair:
  flag = d.pick(d.v.flags)
  value = d.pick(("True", "False"))
  head, ind = d.opening(levels=(1, 1, 2))
  return TaskPair(f"{head}{ind}if {flag} == {value}", f"{head}{ind}{flag} = {value}", ":\n", "\n")


@task("while_return_true", expected=(":\n", "\n"), max_edit=1,
      description="`while True` continues with `:`, `return True` ends the line.")
def while_return_true(d: Draw) -> TaskPair:
  head, ind = d.opening(levels=(1, 1, 2))
  return TaskPair(f"{head}{ind}while True", f"{head}{ind}return True", ":\n", "\n")


TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
  return TASKS.lookup(name)


def resolve_names(names: str | Sequence[str] | None) -> list[str]:
  """"all" / None / a comma list / a sequence → validated task names."""
  return TASKS.resolve(names)
