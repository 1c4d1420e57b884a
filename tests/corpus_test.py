import ast
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
