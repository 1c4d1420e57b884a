import json
import os

import numpy as np
import pytest

from sparsejax.data import dataset as data
from sparsejax.data import sources
from sparsejax.data.dataset import DataConfig
from sparsejax.utils.errors import FileFormatError


def small_data(**kw) -> DataConfig:
  base = dict(train_tokens=30_000, eval_tokens=3_000, tokenizer="bytes")
  base.update(kw)
  return DataConfig(**base)


def test_prepare_writes_shards_and_manifest_then_reuses_them(tmp_path):
  d = str(tmp_path / "data")
  lines = []
  ds = data.prepare(small_data(), d, lines.append)
  manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
  assert manifest["sources"]["builtin"]["train"]["tokens"] == 30_000
  assert manifest["tokenizer_sha256"] == ds.tokenizer.sha256()
  assert len(ds.train[0]) == 30_000 and len(ds.eval[0]) == 3_000
  assert ds.train[0].dtype == np.uint16
  # Documents are separated by EOT.
  assert (np.asarray(ds.train[0]) == ds.tokenizer.eot_id).sum() > 5
  mtime = os.path.getmtime(tmp_path / "data" / "train_builtin.bin")
  again = data.prepare(small_data(), d, lines.append)
  assert os.path.getmtime(tmp_path / "data" / "train_builtin.bin") == mtime
  np.testing.assert_array_equal(np.asarray(again.train[0]), np.asarray(ds.train[0]))
  with pytest.raises(ValueError, match="data.train_tokens"):
    data.prepare(small_data(train_tokens=40_000), d, lines.append)


def test_held_out_split_is_disjoint_from_train(tmp_path):
  ds = data.prepare(small_data(), str(tmp_path), lambda _: None)
  tok = ds.tokenizer
  train_docs = set(tok.decode(np.asarray(ds.train[0])).split("<|endoftext|>")[:-1])
  eval_docs = set(tok.decode(np.asarray(ds.eval[0])).split("<|endoftext|>")[:-1])
  assert train_docs and eval_docs and not train_docs & eval_docs


def test_sampler_is_a_pure_function_of_seed_step_process():
  tokens = np.arange(10_000, dtype=np.uint16)
  s0 = data.BatchSampler(tokens, batch_size=8, seq_len=16, seed=3, process_count=2)
  s1 = data.BatchSampler(tokens, batch_size=8, seq_len=16, seed=3, process_index=1,
                         process_count=2)
  b = s0.batch(5)
  assert b.shape == (4, 17) and b.dtype == np.int32
  np.testing.assert_array_equal(b, data.BatchSampler(tokens, batch_size=8, seq_len=16, seed=3,
                                                     process_count=2).batch(5))
  assert not np.array_equal(b, s0.batch(6))
  assert not np.array_equal(b, s1.batch(5))
  assert (np.diff(b, axis=1) == 1).all()  # contiguous windows


def test_mixing_weights_set_the_token_shares(tmp_path):
  files = tmp_path / "user"
  files.mkdir()
  for i in range(40):
    (files / f"doc{i}.txt").write_text(f"zqxuser {i} " * 60)
  cfg = small_data(builtin_weight=3.0, files_weight=1.0, files=str(files), train_tokens=20_000,
                   eval_tokens=400)
  ds = data.prepare(cfg, str(tmp_path / "data"), lambda _: None)
  src = ds.manifest["sources"]
  assert src["builtin"]["train"]["tokens"] == 15_000 and src["files"]["train"]["tokens"] == 5_000
  sampler = data.BatchSampler(ds.train, batch_size=400, seq_len=24, seed=0)
  rows = sampler.batch(0)
  from_user = np.mean([ds.tokenizer.decode(r).count("zqxuser") > 0 for r in rows])
  assert 0.15 < from_user < 0.35


def test_python_source_skips_and_counts_bad_files(tmp_path):
  root = tmp_path / "py"
  (root / "pkg").mkdir(parents=True)
  (root / "a.py").write_text("x = 1\n")
  (root / "pkg" / "b.py").write_text("x = 1\n")  # duplicate content
  (root / "c.py").write_bytes(b"\xff\xfe bad utf8")
  (root / "d.py").write_bytes(b"bin\x00ary")
  (root / "e.py").write_text("  \n")
  (root / "f.py").write_text("y = 2\n" * (sources.MAX_FILE_BYTES // 4))
  stats = sources.SourceStats()
  docs = list(sources.python_files([str(root)], stats))
  assert docs == ["x = 1\n"]
  assert (stats.files, stats.duplicates, stats.non_utf8, stats.binary, stats.empty,
          stats.too_large) == (1, 1, 1, 1, 1, 1)


def test_stdlib_is_the_default_python_corpus():
  stats = sources.SourceStats()
  docs = list(zip(range(20), sources.python_files(sources.default_python_dirs(), stats)))
  assert len(docs) == 20


@pytest.mark.parametrize("setup, message", [
    ("missing", "data.python_dirs: no such directory"),
    ("empty", r"no usable documents \(no \.py files found in .*corpus\)"),
    ("non_utf8", r"no usable documents \(3 files read in .*corpus; skipped: 3 non-UTF-8 files\)"),
])
def test_bad_python_corpora_are_clear_errors(tmp_path, setup, message):
  root = tmp_path / "corpus"
  if setup != "missing":
    root.mkdir()
  if setup == "non_utf8":
    for i in range(3):
      (root / f"f{i}.py").write_bytes(b"\xff\xfe\xfa" * 10)
  cfg = small_data(builtin_weight=0.0, python_weight=1.0, python_dirs=str(root))
  with pytest.raises(sources.CorpusError, match=message):
    data.prepare(cfg, str(tmp_path / "data"), lambda _: None)
  assert not (tmp_path / "data" / "manifest.json").exists()


def test_missing_user_file_is_a_clear_error(tmp_path):
  cfg = small_data(files_weight=1.0, files=str(tmp_path / "nope.jsonl"))
  with pytest.raises(sources.CorpusError, match="data.files: no such file or directory"):
    data.prepare(cfg, str(tmp_path / "data"), lambda _: None)


def test_jsonl_user_files(tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text('{"text": "first doc"}\n"second doc"\nnot json\n{"other": 1}\n')
  stats = sources.SourceStats()
  assert list(sources.user_files([str(path)], stats)) == ["first doc", "second doc"]
  assert stats.bad_lines == 2


def user_corpus(root, kind: str):
  """A directory of user files that hold no usable document, in one of several ways."""
  root.mkdir()
  if kind == "binary":
    (root / "a.txt").write_bytes(b"\x00\x01\x02" * 50)
  elif kind == "non_utf8":
    (root / "a.txt").write_bytes(b"caf\xe9 " * 50)
  elif kind == "zero_bytes":
    (root / "a.txt").write_bytes(b"")
  elif kind == "malformed_jsonl":
    (root / "a.jsonl").write_text('{"text": 3}\nnot json\n{"other": "x"}\n')
  return root


@pytest.mark.parametrize("kind, detail", [
    ("empty_dir", r"no \.txt/\.jsonl/\.py/\.md files found in .*corpus"),
    ("binary", r"1 file read in .*corpus; skipped: 1 binary file"),
    ("non_utf8", r"1 file read in .*corpus; skipped: 1 non-UTF-8 file"),
    ("zero_bytes", r"1 file read in .*corpus; skipped: 1 empty file"),
    ("malformed_jsonl", r"1 file read in .*corpus; skipped: 3 JSONL lines without text"),
])
def test_unusable_user_corpus_says_what_was_skipped_before_training_a_tokenizer(
    tmp_path, kind, detail):
  """With the default BPE tokenizer these used to surface as "the tokenizer training text only
  supports 257 tokens"; the real cause is the corpus, and nothing is built."""
  root = user_corpus(tmp_path / "corpus", kind)
  cfg = DataConfig(builtin_weight=0.0, files_weight=1.0, files=str(root), train_tokens=5_000,
                   eval_tokens=500)
  assert cfg.tokenizer == "bpe"
  with pytest.raises(sources.CorpusError,
                     match=rf"^data\.files: the corpus holds no usable documents \({detail}\)"):
    data.prepare(cfg, str(tmp_path / "data"), lambda _: None)
  assert not (tmp_path / "data").exists()


def test_too_little_user_text_for_the_bpe_names_the_corpus_size(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("def f(x):\n    return x + 1\n" * 20)
  cfg = DataConfig(builtin_weight=0.0, files_weight=1.0, files=str(path), train_tokens=5_000,
                   eval_tokens=500)
  with pytest.raises(sources.CorpusError, match=r"^data\.bpe_vocab_size: the corpus text "
                     r"\([\d,]+ characters in 1 document\) supports only \d+ BPE tokens, 2048 "
                     r"were requested"):
    data.prepare(cfg, str(tmp_path / "data"), lambda _: None)


def test_a_single_file_user_corpus_is_usable_with_the_bpe(tmp_path):
  """One .txt file is one document: its last tenth becomes the held-out split (the 1-in-50 hash
  split used to put the lone document on one side, so training refused the corpus)."""
  lines = [f"zq_user_line_{i} = {i} * {i}\n" for i in range(200)]
  path = tmp_path / "mine.txt"
  path.write_text("".join(lines))
  cfg = DataConfig(files_weight=1.0, files=str(path), train_tokens=20_000, eval_tokens=2_000,
                   tokenizer_train_chars=200_000, bpe_vocab_size=512)
  out = []
  ds = data.prepare(cfg, str(tmp_path / "data"), out.append)
  assert ds.tokenizer.name == "bpe" and ds.tokenizer.vocab_size == 512
  files = ds.manifest["sources"]["files"]
  assert files["usable_documents"] == 1
  assert files["train"]["documents"] == 1 and files["eval"]["documents"] == 1
  order = list(ds.manifest["sources"])
  train_text = ds.tokenizer.decode(np.asarray(ds.train[order.index("files")]))
  eval_text = ds.tokenizer.decode(np.asarray(ds.eval[order.index("files")]))
  assert eval_text == "".join(lines[180:]) + "<|endoftext|>"
  assert train_text == "".join(lines[:180]) + "<|endoftext|>"
  assert any("data: files: 1 usable document from 1 file (the last tenth of the one document is "
             "held out); skipped: nothing" == line for line in out)


def test_a_small_source_gets_a_held_out_document(tmp_path):
  """Three documents whose hashes pick none for the held-out split: one is held out anyway."""
  docs = ["alpha beta gamma " * 5, "delta epsilon " * 5, "zeta eta theta " * 5]
  assert not any(data._doc_hash(d) % data.EVAL_EVERY == 0 for d in docs)
  path = tmp_path / "docs.jsonl"
  path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
  cfg = small_data(builtin_weight=0.0, files_weight=1.0, files=str(path), train_tokens=100_000,
                   eval_tokens=10_000)
  ds = data.prepare(cfg, str(tmp_path / "data"), lambda _: None)
  held = min(docs, key=data._doc_hash)
  assert ds.tokenizer.decode(np.asarray(ds.eval[0])) == held + "<|endoftext|>"
  train_docs = ds.tokenizer.decode(np.asarray(ds.train[0])).split("<|endoftext|>")[:-1]
  assert sorted(train_docs) == sorted(d for d in docs if d != held)


def test_a_damaged_manifest_is_named(tmp_path):
  d = tmp_path / "data"
  data.prepare(small_data(), str(d), lambda _: None)
  (d / "manifest.json").write_text('{"config": ')
  with pytest.raises(FileFormatError, match=rf"^{d / 'manifest.json'}: not valid JSON \(line 1 "
                     "column 12: Expecting value\\); expected a data manifest$"):
    data.prepare(small_data(), str(d), lambda _: None)
  (d / "manifest.json").write_text('{"config": {}}')
  with pytest.raises(FileFormatError, match=rf"^{d / 'manifest.json'}: not a data manifest "
                     r"\(KeyError: 'sources'\)"):
    data.load(str(d))


def test_global_batch_does_not_depend_on_the_process_count():
  tokens = np.arange(10_000, dtype=np.uint16)
  whole = data.BatchSampler(tokens, batch_size=8, seq_len=16, seed=3).batch(7)
  parts = [data.BatchSampler(tokens, batch_size=8, seq_len=16, seed=3, process_index=i,
                             process_count=4).batch(7) for i in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
