import ast
import inspect
import random
import re

import pytest

from sparsejax.data import corpus

DOCS = corpus.generate_documents(seed=0, n=400)


def test_deterministic_per_seed_and_random_access():
  assert corpus.generate_documents(0, 5) == DOCS[:5]
  assert corpus.document(0, 7) == DOCS[7]
  assert corpus.generate_documents(1, 5) != DOCS[:5]
  assert list(zip(range(3), corpus.iter_documents(0, start=10))) == list(enumerate(DOCS[10:13]))


def test_documents_are_valid_python_and_varied():
  for doc in DOCS:
    ast.parse(doc)
  assert len(set(DOCS)) == len(DOCS)
  lengths = sorted(len(d) for d in DOCS)
  assert lengths[0] < 200 and lengths[-1] > 1500  # short and long programs


@pytest.mark.parametrize("idiom", sorted(corpus.IDIOMS))
def test_every_task_idiom_appears(idiom):
  pattern = re.compile(corpus.IDIOMS[idiom])
  hits = sum(1 for d in DOCS if pattern.search(d))
  assert hits >= 3, f"{idiom}: {hits} of {len(DOCS)} documents"


@pytest.mark.parametrize("statement", corpus._STATEMENTS.options, ids=lambda f: f.__name__)
def test_statements_are_built_at_indent_0_and_indent_their_blocks_once(statement):
  for seed in range(40):
    lines = statement(corpus.Gen(random.Random(seed)), 1)
    assert lines and not lines[0][:1].isspace(), lines
    # Valid on its own at indent 0 (Python rejects an unexpected or missing indent), and the
    # same lines indented once are a valid block body.
    ast.parse("\n".join(lines))
    ast.parse("if True:\n" + "\n".join(corpus.indent(lines)))
    # A block (or a bracket continued on the next line) indents by exactly one level.
    widths = [len(line) - len(line.lstrip(" ")) for line in lines if line.strip()]
    assert all(b - a == 4 or b <= a for a, b in zip(widths, widths[1:])), lines


def test_functions_and_classes_indent_their_bodies_once():
  g = corpus.Gen(random.Random(3))
  for item in (g.function(), g.klass(), g.function(method=True)):
    assert not item[0].startswith(" ") and item[0].endswith(":")
    assert all(line.startswith("    ") or not line for line in item[1:]), item
    ast.parse("\n".join(item))


def test_weighted_table_draws_in_proportion_and_reproducibly():
  table = corpus.Table({"a": 3, "b": 1, "never": 0})
  draws = [table.draw(random.Random(f"t/{i}")) for i in range(4000)]
  share = draws.count("a") / len(draws)
  assert 0.72 < share < 0.78 and "never" not in draws
  assert draws == [table.draw(random.Random(f"t/{i}")) for i in range(4000)]
  g = corpus.Gen(random.Random(0))
  assert g.draw(corpus.Table({lambda gen, x: x * 2: 1}), 21) == 42  # callables get (gen, *args)


def test_generator_has_no_probability_chains_or_inline_indents():
  source = inspect.getsource(corpus)
  assert "roll" not in source and "' ' *" not in source and '" " *' not in source
