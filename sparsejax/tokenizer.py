"""Tokenizers. ``ByteTokenizer``: every UTF-8 byte is a token, plus ``<|endoftext|>``.

Byte-level tokens need no training and express any text, which makes them the fallback for tests and
for the smallest runs.
"""

from __future__ import annotations

from typing import Protocol, Sequence

EOT_TEXT = "<|endoftext|>"


class Tokenizer(Protocol):
  """What the data pipeline and the tasks need from a tokenizer."""

  name: str
  vocab_size: int
  eot_id: int

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...


class ByteTokenizer:
  """Token i < 256 is byte i; token 256 is ``<|endoftext|>``."""

  name = "bytes"
  vocab_size = 257
  eot_id = 256

  def encode(self, text: str) -> list[int]:
    return list(text.encode("utf-8"))

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
