
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.tasks import batch as batch_lib
from sparsejax.tasks import evaluation
from sparsejax.tasks import generators as tasks
from sparsejax.data import tokenizer as tok_lib
from sparsejax.data.dataset import make_tokenizer, source_weights
from sparsejax.data.dataset import DataConfig


def differing_middle(a: str, b: str) -> tuple[str, str]:
  """What is left of a and b after removing their common prefix and common suffix."""
  p = 0
  while p < min(len(a), len(b)) and a[p] == b[p]:
    p += 1
  s = 0
  while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
    s += 1
  return a[p:len(a) - s], b[p:len(b) - s]


@pytest.fixture(scope="module")
def default_tokenizer():
  """The tokenizer the training pipeline trains by default (smaller text budget for speed)."""
  cfg = DataConfig(tokenizer_train_chars=1_000_000)
  return make_tokenizer(cfg, source_weights(cfg))


def test_registry_has_the_papers_20_tasks():
  assert tasks.TASK_NAMES == (
      "single_double_quote", "final_kwarg", "set_or_string", "set_or_string_fixedvarname",
      "class_init", "with_as", "bracket_brace", "with_open", "bracket_counting", "for_while",
      "else_elif", "fstring_brace", "if_ternary", "var_swap", "indent_for", "lambda_func",
      "if_equals", "enumerate_range", "var_if", "while_return_true")
  for t in tasks.TASKS.values():
    assert t.description


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_task_pairs_are_valid_deterministic_and_minimal(name, default_tokenizer):
  task = tasks.get_task(name)
  train = task.pairs(150, split="train")
  test = task.pairs(60, split="test")
  assert train == task.pairs(150, split="train")  # deterministic
  assert task.pairs(20, split="train", seed=1) != train[:20]  # seeded
  assert not {(p.context_a, p.context_b) for p in train} & {(p.context_a, p.context_b)
                                                             for p in test}
  for p in train + test:
    assert p.context_a != p.context_b and p.completion_a != p.completion_b
    # Minimal difference: outside one stretch of at most 40 characters the contexts are equal,
    # or (class_init) the completed contexts are the same lines in another order.
    mid_a, mid_b = differing_middle(p.context_a, p.context_b)
    reordered = (sorted((p.context_a + p.completion_a).split("\n"))
                 == sorted((p.context_b + p.completion_b).split("\n")))
    assert (len(mid_a) <= 40 and len(mid_b) <= 40) or reordered, (p.context_a, p.context_b)
  batch = batch_lib.encode_pairs(task, train + test, default_tokenizer)
  assert (batch.correct[:, 0] == batch.alt[:, 1]).all() and (batch.correct != batch.alt).all()
  # Surrounding code varies: many distinct context lengths.
  assert len(set(batch.last[:, 0].tolist())) >= 8
  for i, p in enumerate(train + test):
    for s, context in enumerate((p.context_a, p.context_b)):
      assert default_tokenizer.decode(batch.tokens[i, s, : batch.last[i, s] + 1]) == context


def test_inexpressible_task_names_the_task_and_string():
  with pytest.raises(batch_lib.TaskExpressionError, match=r"task single_double_quote: '\"\)\\n' is "
                     r"not a single token"):
    batch_lib.encode_pairs(tasks.get_task("single_double_quote"),
                       tasks.get_task("single_double_quote").pairs(3), tok_lib.ByteTokenizer())


def test_unknown_task_lists_valid_ones():
  with pytest.raises(KeyError, match="valid tasks: single_double_quote"):
    tasks.resolve_names("bracket_counting,nope")
  assert tasks.resolve_names("all") == list(tasks.TASK_NAMES)


def test_pair_loss_matches_hand_computation():
  # One pair; V = 4; sequence A: correct 1 alt 2, sequence B: correct 2 alt 1.
  logits = jnp.array([[[0.0, 2.0, 0.5, 9.0], [0.0, 1.0, -1.0, 9.0]]])
  loss, right = evaluation.pair_loss(logits, jnp.array([[1, 2]]), jnp.array([[2, 1]]))
  want_a = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(0.5)))
  want_b = -np.log(np.exp(-1.0) / (np.exp(-1.0) + np.exp(1.0)))
  np.testing.assert_allclose(np.asarray(loss), [[want_a, want_b]], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(right), [[True, False]])
  # The third-token logit (9.0) does not matter: only the two candidates are compared.


def test_a_model_that_always_prefers_one_token_gets_half(default_tokenizer):
  task = tasks.get_task("var_swap")
  batch = batch_lib.encode_pairs(task, task.pairs(50), default_tokenizer)
  V = default_tokenizer.vocab_size
  # Always prefer the token that is correct for context A.
  logits = np.zeros((50, 2, V), np.float32)
  for i in range(50):
    logits[i, :, batch.correct[i, 0]] = 5.0
  loss, right = evaluation.pair_loss(jnp.asarray(logits), jnp.asarray(batch.correct),
                                jnp.asarray(batch.alt))
  assert float(right.mean()) == 0.5
  np.testing.assert_allclose(float(loss.mean()), (np.log1p(np.exp(-5.0)) + np.log1p(np.exp(5.0)))
                             / 2, rtol=1e-5)
