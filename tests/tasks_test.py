import ast

import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.data import corpus
from sparsejax.data import tokenizer as tok_lib
from sparsejax.data.dataset import DataConfig
from sparsejax.data.dataset import make_tokenizer
from sparsejax.data.dataset import source_weights
from sparsejax.tasks import batch as batch_lib
from sparsejax.tasks import evaluation
from sparsejax.tasks import generators as tasks
from sparsejax.tasks import registry
from sparsejax.tasks import surface

N_PAIRS = 500  # per task and split: the minimal-contrast bounds are checked on this many


@pytest.fixture(scope="module")
def default_tokenizer():
  """The tokenizer the training pipeline trains by default (smaller text budget for speed)."""
  cfg = DataConfig(tokenizer_train_chars=1_000_000)
  return make_tokenizer(cfg, source_weights(cfg))


def parses_as_python(text: str) -> bool:
  """Whether ``text`` is valid Python, allowing one open block at the end (a context + completion
  may end on a block header whose body comes later)."""
  for tail in ("", *(" " * k + "pass\n" for k in (0, 4, 8, 12, 16))):
    try:
      ast.parse(text + tail)
      return True
    except SyntaxError:
      pass
  return False


def test_registry_has_the_papers_20_tasks():
  assert tasks.TASK_NAMES == (
      "single_double_quote", "final_kwarg", "set_or_string", "set_or_string_fixedvarname",
      "class_init", "with_as", "bracket_brace", "with_open", "bracket_counting", "for_while",
      "else_elif", "fstring_brace", "if_ternary", "var_swap", "indent_for", "lambda_func",
      "if_equals", "enumerate_range", "var_if", "while_return_true")
  for t in tasks.TASKS.values():
    assert t.description and 1 <= t.max_edit <= 6 and t.flags <= set(registry.FLAGS)
  # Only else_elif ends its contexts on different tokens (inherent: `else` vs `elif`).
  assert [n for n, t in tasks.TASKS.items() if t.last_token_differs] == ["else_elif"]
  assert tasks.get_task("final_kwarg").expected == (("=None",), ("):\n",))


def test_registry_rejects_a_duplicate_name_and_bad_metadata():
  reg = registry.TaskRegistry()
  make = lambda d: registry.TaskPair("a", "b", "c", "d")
  reg.register("demo", description="a demo task")(make)
  with pytest.raises(registry.DuplicateTaskError, match="'demo' is already registered"):
    reg.register("demo", description="again")(make)
  with pytest.raises(registry.DuplicateTaskError, match="'var_swap' is already registered"):
    tasks.TASKS.register("var_swap", description="a second var_swap")
  assert tasks.TASKS["var_swap"].make is tasks.var_swap  # the first one is kept
  with pytest.raises(ValueError, match="unknown flag"):
    reg.register("x", description="d", flags=("bigram",))
  with pytest.raises(ValueError, match="max_edit must be in 1..6"):
    reg.register("y", description="d", max_edit=7)
  assert list(reg) == ["demo"]


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_pairs_are_minimal_contrasts_valid_python_and_split(name, default_tokenizer):
  task = tasks.get_task(name)
  train = task.pairs(N_PAIRS, split="train")
  test = task.pairs(100, split="test")
  ood = task.pairs(N_PAIRS, split="ood")
  assert train[:50] == task.pairs(50, split="train")  # deterministic
  assert task.pairs(20, split="train", seed=1) != train[:20]  # seeded
  key = lambda p: (p.context_a, p.context_b)
  assert not {key(p) for p in train} & {key(p) for p in test}
  for p in train + test + ood:
    assert p.context_a != p.context_b and p.completion_a != p.completion_b
    # The broken contexts of the old generators (a `for ...:` header without its body) are gone.
    assert parses_as_python(p.context_a + p.completion_a), p.context_a + p.completion_a
    assert parses_as_python(p.context_b + p.completion_b), p.context_b + p.completion_b
  mean_tokens = {}
  for split, pairs in (("train", train), ("test", test), ("ood", ood)):
    # encode_pairs validates every pair: decisive tokens, and the minimal contrast (edit-distance
    # bound, same length where promised, same last token unless flagged).
    batch = batch_lib.encode_pairs(task, pairs, default_tokenizer)
    assert (batch.correct[:, 0] == batch.alt[:, 1]).all() and (batch.correct != batch.alt).all()
    ids = [(default_tokenizer.encode(p.context_a), default_tokenizer.encode(p.context_b))
           for p in pairs]
    assert max(batch_lib.token_edit_distance(a, b) for a, b in ids) <= task.max_edit
    if task.same_length:
      assert all(len(a) == len(b) for a, b in ids)
    if not task.last_token_differs:
      assert all(a[-1] == b[-1] for a, b in ids)
    assert batch.last.max() < 128, f"{split}: contexts must fit a 128-token model"
    mean_tokens[split] = batch.last.mean() + 1
    for i, p in enumerate(pairs[:20]):
      for s, context in enumerate((p.context_a, p.context_b)):
        assert default_tokenizer.decode(batch.tokens[i, s, :batch.last[i, s] + 1]) == context
  # Surrounding code varies, and ood contexts are longer.
  assert len({len(p.context_a) for p in train}) >= 8
  assert mean_tokens["ood"] > 1.5 * mean_tokens["train"], mean_tokens


def test_ood_surface_forms_never_occur_in_train_pairs_or_the_corpus():
  assert len(surface.OOD_WORDS) > 80
  assert not surface.OOD_WORDS & surface.words_of(" ".join(
      w for f in ("names", "nouns", "words", "verbs", "classes", "attrs", "flags", "calls",
                  "containers", "handles", "exts", "short") for w in getattr(surface.IID, f)))
  ood_only = surface.OOD_WORDS | {k.lower() for k in surface.OOD_KEYWORDS}
  corpus_text = "\n".join(corpus.generate_documents(0, 3000))
  assert not ood_only & surface.words_of(corpus_text)
  assert "#" not in corpus_text and "*=" not in corpus_text  # comments, *=: held-out statements
  assert not {"a7", "b7", "x7", "y7", "p7", "q7", "i7", "j7"} & set(corpus_text.split())
  for name, task in tasks.TASKS.items():
    train = " ".join(p.context_a + p.completion_a + p.context_b + p.completion_b
                     for p in task.pairs(300, split="train"))
    assert not ood_only & surface.words_of(train), name
    assert "#" not in train and "*=" not in train, name
    for p in task.pairs(100, split="ood"):  # every ood pair holds held-out words
      assert surface.words_of(p.context_a) & surface.OOD_WORDS, (name, p.context_a)


def test_tasks_do_not_borrow_the_corpus_vocabulary():
  # The task generators keep their own word lists (decoupled from the corpus generator).
  import sparsejax.tasks.generators as gen_module
  import sparsejax.tasks.surface as surface_module
  for module in (gen_module, surface_module):
    assert "corpus" not in vars(module), module.__name__


def hand_task(**kw) -> registry.Task:
  reg = registry.TaskRegistry()
  reg.register("hand", description="a hand-made task", **kw)(lambda d: None)
  return reg["hand"]


def test_validator_rejects_a_non_minimal_pair(default_tokenizer):
  # The old bracket_counting: other complete inner lists make the contexts differ in many tokens.
  pair = registry.TaskPair("xs = [[1, 2], [5, 6", "xs = [5, 6", "]]\n", "]\n")
  with pytest.raises(batch_lib.MinimalContrastError,
                     match=r"task bracket_counting: .* not a minimal contrast: they differ in "
                     r"\d+ tokens \(edit distance\), the task's bound is 1"):
    batch_lib.encode_pairs(tasks.get_task("bracket_counting"), [pair], default_tokenizer)
  # The same pair passes for a task whose bound allows it, so the bound is what failed.
  batch_lib.encode_pairs(hand_task(max_edit=6, same_length=False), [pair], default_tokenizer)


def test_validator_rejects_pairs_whose_last_tokens_differ_unless_flagged(default_tokenizer):
  # The old lambda_func: `lambda x` vs `def f(x` end on different tokens (the bigram table alone
  # could tell them apart).
  pair = registry.TaskPair("square = lambda x", "def square(x", ": x * 2\n", "):\n")
  with pytest.raises(batch_lib.MinimalContrastError,
                     match=r"end on different tokens ' x' vs '\(x'.*bigram table"):
    batch_lib.encode_pairs(hand_task(max_edit=6, same_length=False), [pair], default_tokenizer)
  flagged = hand_task(max_edit=6, same_length=False, flags=(tasks.LAST_TOKEN_DIFFERS,))
  batch_lib.encode_pairs(flagged, [pair], default_tokenizer)


def test_validator_rejects_different_lengths_where_the_task_promises_one(default_tokenizer):
  pair = registry.TaskPair("def f():\n    if x", "def f():\n    x", " ==", " =")  # one insertion
  with pytest.raises(batch_lib.MinimalContrastError, match="promises the same length"):
    batch_lib.encode_pairs(hand_task(max_edit=1), [pair], default_tokenizer)
  batch_lib.encode_pairs(hand_task(max_edit=1, same_length=False), [pair], default_tokenizer)


def test_truncation_may_not_cut_into_the_contrast(default_tokenizer):
  task = tasks.get_task("bracket_counting")
  long = [p for p in task.pairs(50, split="ood") if len(default_tokenizer.encode(p.context_b)) > 60]
  with pytest.raises(batch_lib.MinimalContrastError, match="cuts into where they differ"):
    batch_lib.encode_pairs(task, long[:1], default_tokenizer, max_len=20)
  batch = batch_lib.encode_pairs(tasks.get_task("for_while"), tasks.get_task("for_while").pairs(5),
                                 default_tokenizer, max_len=4)  # the contrast is in the last tokens
  assert batch.seq_len == 4


def test_token_edit_distance():
  assert batch_lib.token_edit_distance([1, 2, 3], [1, 2, 3]) == 0
  assert batch_lib.token_edit_distance([1, 2, 3], [1, 9, 3]) == 1
  assert batch_lib.token_edit_distance([1, 2, 3], [1, 3]) == 1
  assert batch_lib.token_edit_distance([5, 6, 7, 8], [9, 5, 6, 7]) == 2
  assert batch_lib.token_edit_distance([1, 2, 3, 4], [1, 4, 3, 2, 4]) == 2
  assert batch_lib.token_edit_distance([], [1, 2]) == 2


def test_inexpressible_task_names_the_task_and_string():
  with pytest.raises(batch_lib.TaskExpressionError, match=r"task single_double_quote: '\"\)\\n' is "
                     r"not a single token"):
    batch_lib.encode_pairs(tasks.get_task("single_double_quote"),
                           tasks.get_task("single_double_quote").pairs(3), tok_lib.ByteTokenizer())


def test_unknown_task_lists_valid_ones():
  with pytest.raises(KeyError, match="valid tasks: single_double_quote"):
    tasks.resolve_names("bracket_counting,nope")
  with pytest.raises(KeyError, match="unknown task 'nope'"):
    tasks.get_task("nope")
  assert tasks.resolve_names("all") == list(tasks.TASK_NAMES)
  with pytest.raises(ValueError, match="split must be one of train, test, ood"):
    tasks.get_task("var_swap").pairs(2, split="validation")


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


def test_task_table_shows_both_splits_and_flags():
  row = lambda loss, acc: {"loss": loss, "accuracy": acc, "pairs": 10}
  results = {"else_elif": dict(row(0.1, 0.9), flags=["last_token_differs"], test=row(0.1, 0.9),
                               ood=row(0.7, 0.6)),
             "var_swap": dict(row(0.9, 0.4), flags=[], test=row(0.9, 0.4), ood=row(1.0, 0.3))}
  table = evaluation.format_table(results, 0.15)
  lines = table.splitlines()
  assert "test loss" in lines[0] and "ood loss" in lines[0] and "flags" in lines[0]
  assert lines[1].split()[:6] == ["else_elif", "0.1000", "0.900", "0.7000", "0.600", "10"]
  assert "yes" in lines[1] and "last_token_differs" in lines[1]
  assert "no" in lines[2] and lines[2].rstrip().endswith("-")
  assert "solved: 1 of 2 tasks" in table and "flag last_token_differs: the two contexts" in table
  doc = evaluation.report(7, results, 0.15)
  assert doc["splits"] == ["test", "ood"] and doc["split"] == "test"
  assert set(doc["flags"]) == {"last_token_differs"}


def test_readme_tasks_example_runs(capsys):
  import re
  from pathlib import Path
  text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  section = text[text.index("## The 20 tasks"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  env: dict = {}
  exec(compile(code, "README.md", "exec"), env)
  assert len(env["pairs"]) == 100 and env["task"].name == "bracket_counting"
  assert "Close a list by its nesting depth" in capsys.readouterr().out


def test_evaluate_cuts_calls_to_their_longest_context_without_changing_scores():
  from conftest import tiny_config
  from sparsejax.train.step import init_model
  cfg = tiny_config()  # block_size 32, vocab 64, position embeddings (padding must not leak)
  graphdef, params, buffers = init_model(cfg, seed=0)
  rng = np.random.default_rng(0)
  N, T = 40, 32
  # The 16 shortest pairs (one call) end by position 16, one of them exactly there: a call cut
  # one token too short would lose it. The others are longer.
  last = rng.integers(17, T, size=(N, 2)).astype(np.int32)
  last[:16] = rng.integers(2, 16, size=(16, 2))
  last[0, 0] = 16
  tokens = rng.integers(1, 64, size=(N, 2, T)).astype(np.int32)
  tokens[np.arange(T)[None, None] > last[..., None]] = 0  # right-padded, as encode_pairs does
  correct = rng.integers(0, 64, size=(N, 2)).astype(np.int32)
  batch = batch_lib.TaskBatch(tokens, last, correct, (correct + 1) % 64)
  whole = evaluation.evaluate(graphdef, params, buffers, {"t": batch}, chunk=16, bucket=T)
  cut = evaluation.evaluate(graphdef, params, buffers, {"t": batch}, chunk=16, bucket=16)
  assert cut["t"]["accuracy"] == whole["t"]["accuracy"] and cut["t"]["pairs"] == N
  np.testing.assert_allclose(cut["t"]["loss"], whole["t"]["loss"], rtol=1e-5)


def test_solved_is_one_definition_and_names_the_split_that_decided():
  v = evaluation.solved({"val": 0.18, "test": 0.138}, 0.15)
  assert not v and (v.split, v.loss) == ("val", 0.18)
  assert str(v) == "not solved (val loss 0.1800 > target 0.15)"
  ok = evaluation.solved({"val": 0.10, "test": 0.15}, 0.15)
  assert ok and str(ok) == "solved (test loss 0.1500 <= target 0.15)"
  row = {"loss": 0.2, "accuracy": 0.5, "pairs": 4, "test": {"loss": 0.2, "accuracy": 0.5,
                                                           "pairs": 4},
         "ood": {"loss": 0.01, "accuracy": 1.0, "pairs": 4}}
  v = evaluation.verdict_of(row, 0.15)  # the table judges on its first split only
  assert not v and v.split == "test"


def test_the_prune_summary_prints_the_number_that_decided(tmp_path):
  from sparsejax.circuits import prune_run
  summary = {"tasks": {}, "geometric_mean_edges": None, "config": {"target_loss": 0.15},
             "unsolved": {"with_as": {"full_model_loss_val": 0.182,
                                      "full_model_loss_test": 0.138}}}
  text = prune_run.format_summary(prune_run.PruneResult({}, summary["unsolved"], summary))
  assert "with_as" in text and "not solved (val loss 0.1820 > target 0.15)" in text
  assert "0.138" not in text


def test_evaluate_reports_progress_while_it_scores():
  from conftest import tiny_config
  from flax import nnx
  from sparsejax.model.gpt import GPT
  graphdef, params, buffers = nnx.split(GPT(tiny_config(), rngs=nnx.Rngs(0)), nnx.Param, ...)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 64, size=(4, 2, 16)).astype(np.int32)
  last = np.full((4, 2), 15, np.int32)
  correct = rng.integers(0, 64, size=(4, 2)).astype(np.int32)
  batch = batch_lib.TaskBatch(tokens, last, correct, (correct + 1) % 64)
  lines = []
  evaluation.evaluate(graphdef, params, buffers, {"a": batch, "b": batch, "c": batch},
                      progress=lines.append, every_seconds=0.0)
  assert [line.split(" (")[0] for line in lines] == [
      "eval: 1/3 tasks scored", "eval: 2/3 tasks scored"]
  # the elapsed seconds since the call began (not since the epoch)
  assert all(0 <= int(line.split(" (")[1].rstrip("s)")) < 600 for line in lines), lines


def test_a_circuit_over_the_target_on_test_is_flagged_in_the_summary():
  """The search stops at the target on validation pairs; a circuit whose test loss is over it is
  named in the summary and its table with the loss that decided."""
  from sparsejax.circuits import prune_run, report
  from sparsejax.circuits.graph import Circuit
  from sparsejax.circuits.prune import PruneConfig
  circuits = {name: Circuit(name, {"0.mlp.act_in": [0, 1]}, [{}] * 3, metrics={"loss": loss})
              for name, loss in [("var_if", 0.2156), ("for_while", 0.054)]}
  s = report.summary(circuits, {}, PruneConfig(target_loss=0.15), "run", 1000)
  assert s["misses_target_on_test"] == ["var_if"]
  assert [s["tasks"][n]["meets_target_on_test"] for n in ("var_if", "for_while")] == [False, True]
  text = prune_run.format_summary(prune_run.PruneResult(circuits, {}, s))
  flagged = [line for line in text.splitlines() if "over the target" in line]
  assert flagged == ["over the target (0.15) on its test pairs, though at it on validation: "
                     "var_if (0.216)"]
