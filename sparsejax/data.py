"""Token streams and the stateless batch sampler.

A corpus is one flat stream of token ids (documents separated by ``<|endoftext|>``). The batch for a
step is a pure function of (seed, step, process index): resuming needs only the step, and each host
draws its own rows without coordination.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from sparsejax.tokenizer import Tokenizer


def token_dtype(vocab_size: int):
  return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def build_token_stream(documents: Iterable[str], tokenizer: Tokenizer, n_tokens: int) -> np.ndarray:
  """Encodes documents (each followed by EOT) until ``n_tokens`` tokens; returns exactly that many."""
  out = np.empty(n_tokens, token_dtype(tokenizer.vocab_size))
  filled = 0
  for doc in documents:
    ids = tokenizer.encode(doc)
    ids.append(tokenizer.eot_id)
    take = min(len(ids), n_tokens - filled)
    out[filled:filled + take] = ids[:take]
    filled += take
    if filled == n_tokens:
      return out
  raise ValueError(f"the documents hold only {filled} tokens, {n_tokens} were requested")


class BatchSampler:
  """Random windows of ``seq_len + 1`` tokens: inputs are ``[:, :-1]``, targets ``[:, 1:]``."""

  def __init__(self, tokens: np.ndarray, *, batch_size: int, seq_len: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if batch_size % process_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes")
    if len(tokens) < seq_len + 2:
      raise ValueError(f"a stream of {len(tokens)} tokens cannot give windows of {seq_len + 1}")
    self.tokens = tokens
    self.local_batch = batch_size // process_count
    self.seq_len = seq_len
    self.seed = seed
    self.process_index = process_index

  def batch(self, step: int) -> np.ndarray:
    """This process's rows for ``step``: int32 (batch_size / process_count, seq_len + 1)."""
    rng = np.random.default_rng([self.seed, step, self.process_index])
    starts = rng.integers(0, len(self.tokens) - self.seq_len - 1, size=self.local_batch)
    idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
    return np.asarray(self.tokens[idx], np.int32)
