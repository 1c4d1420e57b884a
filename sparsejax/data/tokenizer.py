"""Tokenizers: the 2048-token byte-level BPE of the paper, and a byte-level fallback.

The paper's ``tinypython_2k`` is a 2048-token BPE trained on its Python corpus, with the pre-tokenizer
regex below and ``<|endoftext|>`` = 2047 (paper-notes §2.2). :func:`train_bpe` trains the same kind
of tokenizer on our corpus with the ``tokenizers`` library (no network); :func:`load_tinypython`
reads the official ``encoder.json`` + ``vocab.bpe`` from a local directory; :func:`load_tokenizer`
reads a ``tokenizer.json`` we saved. ``ByteTokenizer`` (every UTF-8 byte a token) needs no training.

The regex makes runs of punctuation absorb trailing newlines and slashes, so ``]]\\n``, ``("`` and
``')`` can each be one token — which is what makes several of the paper's tasks single-token.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable, Protocol, Sequence

from sparsejax.utils.errors import FileFormatError, PathError, UserError, os_reason
from sparsejax.utils.files import atomic_write, read_json

EOT_TEXT = "<|endoftext|>"
# The official pre-tokenizer regex (tiktoken ``pat_str`` of tinypython_2k).
PRETOKENIZE_REGEX = (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
                     r"\s*[\r\n]+|\s+(?!\S)|\s+")


class TokenizerError(UserError, ValueError):
  """A tokenizer cannot be trained or used as asked. ``learned``: tokens the text supported."""

  def __init__(self, message: str, learned: int = 0):
    super().__init__(message)
    self.learned = learned


class Tokenizer(Protocol):
  """What the data pipeline and the tasks need from a tokenizer."""

  name: str
  vocab_size: int
  eot_id: int

  def encode(self, text: str) -> list[int]:
    ...

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...

  def sha256(self) -> str:
    ...


class ByteTokenizer:
  """Token i < 256 is byte i; token 256 is ``<|endoftext|>``."""

  name = "bytes"
  vocab_size = 257
  eot_id = 256

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Sequence[int]) -> str:
    out, chunk = [], bytearray()
    for i in ids:
      if i == self.eot_id:
        out.append(chunk.decode("utf-8", errors="replace") + EOT_TEXT)
        chunk = bytearray()
      else:
        chunk.append(int(i))
    out.append(chunk.decode("utf-8", errors="replace"))
    return "".join(out)

  def sha256(self) -> str:
    return hashlib.sha256(b"sparsejax-byte-tokenizer-v1").hexdigest()

  def save(self, path: str) -> None:
    atomic_write(path, json.dumps({"sparsejax_tokenizer": "bytes"}))


class BPETokenizer:
  """A byte-level BPE (``tokenizers.Tokenizer``) with ``<|endoftext|>`` as its last id."""

  def __init__(self, tok, name: str = "bpe"):
    self._tok = tok
    self.name = name
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    eot = tok.token_to_id(EOT_TEXT)
    if eot is None:
      raise TokenizerError(f"tokenizer {name!r} has no {EOT_TEXT} token")
    self.eot_id = eot

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts))]

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def to_json(self) -> str:
    return self._tok.to_str()

  def sha256(self) -> str:
    return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

  def save(self, path: str) -> None:
    atomic_write(path, self.to_json())


def _require_tokenizers():
  try:
    import tokenizers  # noqa: F401
  except ImportError as e:
    raise TokenizerError("BPE tokenizers need the 'tokenizers' package: pip install tokenizers "
                         "(or use data.tokenizer=bytes)") from e
  return tokenizers


def _configure(tok):
  """The official pre-tokenizer (regex, then byte-level mapping) and decoder."""
  tk = _require_tokenizers()
  tok.pre_tokenizer = tk.pre_tokenizers.Sequence([
      tk.pre_tokenizers.Split(tk.Regex(PRETOKENIZE_REGEX), behavior="isolated"),
      tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  tok.decoder = tk.decoders.ByteLevel()
  return tok


def train_bpe(texts: Iterable[str], vocab_size: int = 2048, name: str = "bpe") -> BPETokenizer:
  """Trains a byte-level BPE with ``vocab_size - 1`` learned tokens, then ``<|endoftext|>``.

  Deterministic for the same texts. Raises if the texts are too few to learn that many tokens.
  """
  tk = _require_tokenizers()
  tok = _configure(tk.Tokenizer(tk.models.BPE()))
  trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                   initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                   special_tokens=[])
  tok.train_from_iterator(texts, trainer=trainer)
  learned = tok.get_vocab_size()
  if learned != vocab_size - 1:
    raise TokenizerError(f"the tokenizer training text only supports {learned + 1} tokens, "
                         f"{vocab_size} were requested; use more text or a smaller vocabulary",
                         learned)
  tok.add_special_tokens([EOT_TEXT])
  return BPETokenizer(tok, name)


def load_tokenizer(path: str) -> Tokenizer:
  """Reads a tokenizer saved by ``save`` (``tokenizer.json``) or by the ``tokenizers`` library.
  A file that is not one raises :class:`FileFormatError` naming it."""
  what = "a tokenizer.json (sparsejax's or the tokenizers library's)"
  data = read_json(path, what)
  if not isinstance(data, dict):
    raise FileFormatError(f"{path}: expected {what}, got a JSON {type(data).__name__}")
  if data.get("sparsejax_tokenizer") == "bytes":
    return ByteTokenizer()
  if not isinstance(data.get("model"), dict):
    raise FileFormatError(f"{path}: expected {what}, got an object without a \"model\"")
  tk = _require_tokenizers()
  try:
    with open(path, encoding="utf-8") as f:
      tok = tk.Tokenizer.from_str(f.read())
  except OSError as e:
    raise PathError(f"{path}: cannot be read ({os_reason(e)})") from None
  except Exception as e:  # noqa: BLE001 -- the Rust library raises a bare Exception
    raise FileFormatError(f"{path}: not a tokenizer the tokenizers library can read "
                          f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
                          ) from None
  try:
    return BPETokenizer(tok, name="bpe")
  except TokenizerError as e:
    raise FileFormatError(f"{path}: {e}") from None


def load_tinypython(directory: str) -> BPETokenizer:
  """The official ``tinypython_2k`` from ``encoder.json`` and ``vocab.bpe`` in ``directory``."""
  tk = _require_tokenizers()
  enc_path, bpe_path = (os.path.join(directory, n) for n in ("encoder.json", "vocab.bpe"))
  for p in (enc_path, bpe_path):
    if not os.path.isfile(p):
      raise PathError(f"tinypython tokenizer: {p} not found (data.tokenizer_path must be a "
                      "directory with encoder.json and vocab.bpe)")
  vocab = read_json(enc_path, "a JSON object mapping tokens to ids")
  if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
    raise FileFormatError(f"{enc_path}: expected a JSON object mapping tokens to integer ids")
  try:
    with open(bpe_path, encoding="utf-8") as f:
      lines = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
  except (OSError, UnicodeDecodeError) as e:
    raise FileFormatError(f"{bpe_path}: cannot be read as UTF-8 text ({e})") from None
  merges = [tuple(l.split(" ")) for l in lines]
  bad = next((i for i, m in enumerate(merges) if len(m) != 2), None)
  if bad is not None:
    raise FileFormatError(f"{bpe_path}: merge {bad + 1} is not two tokens separated by a space: "
                          f"{lines[bad][:60]!r}")
  eot = vocab.pop(EOT_TEXT, None)
  try:
    model = tk.models.BPE(vocab=vocab, merges=merges)
  except Exception as e:  # noqa: BLE001 -- the Rust library raises a bare Exception
    raise FileFormatError(f"{directory}: encoder.json and vocab.bpe do not form a BPE ({e})"
                          ) from None
  tok = _configure(tk.Tokenizer(model))
  tok.add_special_tokens([EOT_TEXT])
  out = BPETokenizer(tok, name="tinypython_2k")
  if eot is not None and out.eot_id != eot:
    raise FileFormatError(f"{enc_path}: {EOT_TEXT} should be id {eot}, got {out.eot_id}")
  return out
