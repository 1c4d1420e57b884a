import json

import pytest

from sparsejax.data import corpus
from sparsejax.data import tokenizer as tok_lib
from sparsejax.utils.errors import FileFormatError, UserError

TEXTS = [
    "def f(x, y=None):\n    return x\n",
    "print('héllo wörld') # ünïcode ✓ 🙂\r\n\tindent\t\n",
    "a\x00b\x7f\u2028c",  # control characters
    "x = [[1, 2], [3]]\n<|endoftext|>next document",
    "",
    "     \n\n\n   trailing spaces   ",
    "長い行" * 50,
]


@pytest.fixture(scope="module")
def bpe():
  return tok_lib.train_bpe(corpus.generate_documents(0, 1500), vocab_size=2048)


def test_bpe_vocabulary_and_eot(bpe):
  assert bpe.vocab_size == 2048 and bpe.eot_id == 2047
  assert bpe.encode("<|endoftext|>") == [2047]


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_round_trips_any_text(bpe, text):
  assert bpe.decode(bpe.encode(text)) == text


def test_byte_tokenizer_round_trips_any_text():
  tok = tok_lib.ByteTokenizer()
  for text in TEXTS:
    ids = tok.encode(text)
    assert max(ids, default=0) < 256
    assert tok.decode(ids) == text
  assert tok.decode(tok.encode("a") + [tok.eot_id] + tok.encode("b")) == "a<|endoftext|>b"


def test_official_pretokenizer_makes_punctuation_runs_single_tokens(bpe):
  for text in ["')", '")', "]]\n", "]\n", "('", '("', "):\n"]:
    assert len(bpe.encode(text)) == 1, text
  # Letters never merge with the punctuation before them except one leading char: "=None" is two.
  assert len(bpe.encode("x=None")) >= 2


def test_save_and_load_round_trip(bpe, tmp_path):
  path = tmp_path / "tokenizer.json"
  bpe.save(str(path))
  again = tok_lib.load_tokenizer(str(path))
  assert again.sha256() == bpe.sha256()
  for text in TEXTS:
    assert again.encode(text) == bpe.encode(text)
  tok_lib.ByteTokenizer().save(str(tmp_path / "bytes.json"))
  assert isinstance(tok_lib.load_tokenizer(str(tmp_path / "bytes.json")), tok_lib.ByteTokenizer)


def test_load_official_format_files(bpe, tmp_path):
  """encoder.json + vocab.bpe (GPT-2 data_gym format, as tinypython_2k ships) load as the same BPE."""
  model = json.loads(bpe.to_json())["model"]
  encoder = dict(model["vocab"])
  encoder["<|endoftext|>"] = 2047
  (tmp_path / "encoder.json").write_text(json.dumps(encoder))
  merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
  (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  official = tok_lib.load_tinypython(str(tmp_path))
  assert official.vocab_size == 2048 and official.eot_id == 2047
  for text in TEXTS:
    assert official.encode(text) == bpe.encode(text)


def test_missing_official_files_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="encoder.json not found"):
    tok_lib.load_tinypython(str(tmp_path))


@pytest.mark.parametrize("content, message", [
    ("[1, 2, 3]", r"expected a tokenizer\.json .*, got a JSON list"),
    ('{"a": 1}', r"expected a tokenizer\.json .*, got an object without a \"model\""),
    ('{"model": {"type": "nonsense"}}', "not a tokenizer the tokenizers library can read"),
    ("{not json", r"not valid JSON \(line 1 column 2"),
    (b"\xff\xfe", r"not valid JSON \(not UTF-8 text\)"),
])
def test_a_file_that_is_not_a_tokenizer_is_named(tmp_path, content, message):
  path = tmp_path / "tokenizer.json"
  path.write_bytes(content if isinstance(content, bytes) else content.encode())
  with pytest.raises(FileFormatError, match=rf"^{path}: .*{message}"):
    tok_lib.load_tokenizer(str(path))


def test_too_little_text_for_the_vocabulary():
  with pytest.raises(ValueError, match="only supports"):
    tok_lib.train_bpe(["ab ab ab"], vocab_size=2048)
