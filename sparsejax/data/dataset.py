"""Token shards on disk, their manifest, and the stateless batch sampler.

A prepared dataset is a directory::

  manifest.json        token counts per source and split, tokenizer hash, the data config
  tokenizer.json       the tokenizer (trained BPE, official tinypython_2k, or bytes)
  train_<source>.bin   uint16 token ids, documents separated by <|endoftext|>
  eval_<source>.bin    the held-out split, same format

Each source gets its own shard with as many tokens as its mixing weight asks for, and the sampler
draws windows uniformly over all tokens, so batches follow the mix. The batch for step s is a pure
function of (seed, s, process index): resuming needs only the step and every host reads its own rows.
The manifest is written last: a directory without one is an unfinished build and is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Iterable, Iterator

import numpy as np

from sparsejax.data import corpus
from sparsejax.data import sources
from sparsejax.data import tokenizer as tok_lib
from sparsejax.data.tokenizer import Tokenizer
from sparsejax.utils.files import atomic_write_json, temp_path

MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
# Held-out documents of the built-in generator: a disjoint range of document indices.
EVAL_DOC_OFFSET = 1 << 30
# Documents of finite sources go to the held-out split when their content hash says so (1 in 50).
EVAL_EVERY = 50


TOKENIZERS = ("bpe", "bytes", "tinypython", "file")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """Where the training tokens come from. Nothing is ever downloaded.

  Sources are mixed by weight: each gets ``weight / sum(weights)`` of the train and held-out
  tokens (a finite source that runs out gives what it has; the manifest records it).
  """

  seed: int = 0  # built-in generator seed
  train_tokens: int = 2_000_000  # tokens in the training split (all sources)
  eval_tokens: int = 100_000  # tokens in the held-out split
  builtin_weight: float = 1.0  # the seeded simple-Python generator (sparsejax.corpus)
  python_weight: float = 0.0  # real .py files from python_dirs
  python_dirs: str = ""  # comma-separated directories; "" = the interpreter's standard library
  files_weight: float = 0.0  # user files
  files: str = ""  # comma-separated .txt / .jsonl / .py / .md files or directories
  tokenizer: str = "bpe"  # "bpe": train on the corpus; "bytes"; "tinypython": official files in
  #                         tokenizer_path; "file": a tokenizer.json at tokenizer_path
  tokenizer_path: str = ""
  bpe_vocab_size: int = 2048  # BPE vocabulary, <|endoftext|> = bpe_vocab_size - 1
  tokenizer_train_chars: int = 4_000_000  # characters of corpus text the BPE is trained on

  def __post_init__(self):
    if self.tokenizer not in TOKENIZERS:
      raise ValueError(f"tokenizer: must be one of {TOKENIZERS}, got {self.tokenizer!r}")
    if self.tokenizer in ("tinypython", "file") and not self.tokenizer_path:
      raise ValueError(f"tokenizer_path: required for tokenizer={self.tokenizer!r}")
    if self.train_tokens < 1 or self.eval_tokens < 1:
      raise ValueError("train_tokens: train_tokens and eval_tokens must be >= 1")
    weights = (self.builtin_weight, self.python_weight, self.files_weight)
    if min(weights) < 0 or sum(weights) <= 0:
      raise ValueError("builtin_weight: source weights must be >= 0 with a positive sum")
    if self.files_weight > 0 and not self.files.strip():
      raise ValueError("files: files_weight > 0 needs at least one path in data.files")
    if self.bpe_vocab_size < 258:
      raise ValueError(f"bpe_vocab_size: must be >= 258, got {self.bpe_vocab_size}")


def token_dtype(vocab_size: int):
  return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


# ---------------------------------------------------------------------- writing
def write_tokens(path: str, documents: Iterable[str], tokenizer: Tokenizer, n_tokens: int,
                 chunk_docs: int = 256) -> tuple[int, int]:
  """Encodes documents (each followed by EOT) into ``path`` until ``n_tokens``.

  Returns (tokens written, documents used); fewer tokens when the documents run out.
  """
  dtype = token_dtype(tokenizer.vocab_size)
  written = docs_used = 0
  tmp = temp_path(path)
  with open(tmp, "wb") as f:
    batch: list[str] = []
    it = iter(documents)
    while written < n_tokens:
      batch = [doc for _, doc in zip(range(chunk_docs), it)]
      if not batch:
        break
      for ids in tokenizer.encode_batch(batch):
        ids.append(tokenizer.eot_id)
        take = min(len(ids), n_tokens - written)
        f.write(np.asarray(ids[:take], dtype).tobytes())
        written += take
        docs_used += 1
        if written == n_tokens:
          break
  os.replace(tmp, path)
  return written, docs_used


# ---------------------------------------------------------------------- the dataset
@dataclasses.dataclass
class Dataset:
  tokenizer: Tokenizer
  train: list[np.ndarray]  # one memmap per source
  eval: list[np.ndarray]
  manifest: dict


def _split(docs: Iterable[str], held_out: bool) -> Iterator[str]:
  """Deterministic train / held-out split of a finite source by content hash."""
  for d in docs:
    h = int.from_bytes(hashlib.sha256(d.encode("utf-8", "replace")).digest()[:4], "little")
    if (h % EVAL_EVERY == 0) == held_out:
      yield d


def _source_documents(name: str, cfg, stats: sources.SourceStats, held_out: bool):
  if name == "builtin":
    return corpus.iter_documents(cfg.seed, start=EVAL_DOC_OFFSET if held_out else 0)
  if name == "python":
    dirs = _paths(cfg.python_dirs) or sources.default_python_dirs()
    return _split(sources.python_files(dirs, stats), held_out)
  if name == "files":
    return _split(sources.user_files(_paths(cfg.files), stats), held_out)
  raise ValueError(f"unknown source {name!r}")


def _paths(csv: str) -> list[str]:
  return [p.strip() for p in csv.split(",") if p.strip()]


def source_weights(cfg) -> dict[str, float]:
  weights = {"builtin": cfg.builtin_weight, "python": cfg.python_weight,
             "files": cfg.files_weight}
  weights = {k: v for k, v in weights.items() if v > 0}
  total = sum(weights.values())
  return {k: v / total for k, v in weights.items()}


def _tokenizer_texts(cfg, weights: dict[str, float]) -> Iterator[str]:
  """Training text for the BPE: documents from each source in proportion to its weight."""
  for name, w in weights.items():
    budget = int(w * cfg.tokenizer_train_chars)
    used = 0
    for doc in _source_documents(name, cfg, sources.SourceStats(), held_out=False):
      yield doc
      used += len(doc)
      if used >= budget:
        break


def make_tokenizer(cfg, weights: dict[str, float]) -> Tokenizer:
  if cfg.tokenizer == "bytes":
    return tok_lib.ByteTokenizer()
  if cfg.tokenizer == "bpe":
    return tok_lib.train_bpe(_tokenizer_texts(cfg, weights), cfg.bpe_vocab_size)
  if cfg.tokenizer == "tinypython":
    return tok_lib.load_tinypython(cfg.tokenizer_path)
  if cfg.tokenizer == "file":
    return tok_lib.load_tokenizer(cfg.tokenizer_path)
  raise ValueError(f"data.tokenizer: unknown tokenizer {cfg.tokenizer!r}")


def check_sources(cfg) -> None:
  """Fails before anything is written when a configured path does not exist."""
  if cfg.python_weight > 0:
    for d in _paths(cfg.python_dirs):
      if not os.path.isdir(d):
        raise sources.CorpusError(f"data.python_dirs: no such directory: {d}")
  if cfg.files_weight > 0:
    for p in _paths(cfg.files):
      if not os.path.exists(p):
        raise sources.CorpusError(f"data.files: no such file or directory: {p}")
  if cfg.tokenizer in ("tinypython", "file") and not os.path.exists(cfg.tokenizer_path):
    raise sources.CorpusError(f"data.tokenizer_path: no such file or directory: "
                              f"{cfg.tokenizer_path}")


def prepare(cfg, directory: str, progress: Callable[[str], None] = print) -> Dataset:
  """Builds the dataset of ``cfg`` (a DataConfig) in ``directory``, or loads it if already built."""
  manifest_path = os.path.join(directory, MANIFEST)
  if os.path.exists(manifest_path):
    return load(directory, expected_config=dataclasses.asdict(cfg))
  check_sources(cfg)
  os.makedirs(directory, exist_ok=True)
  weights = source_weights(cfg)
  tokenizer = make_tokenizer(cfg, weights)
  tokenizer.save(os.path.join(directory, TOKENIZER_FILE))
  progress(f"data: tokenizer {tokenizer.name} ({tokenizer.vocab_size} tokens, "
           f"EOT {tokenizer.eot_id})")
  manifest = {"config": dataclasses.asdict(cfg), "tokenizer": tokenizer.name,
              "tokenizer_sha256": tokenizer.sha256(), "vocab_size": tokenizer.vocab_size,
              "eot_id": tokenizer.eot_id, "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name,
              "sources": {}}
  for name, w in weights.items():
    entry = {"weight": w}
    for split, total in (("train", cfg.train_tokens), ("eval", cfg.eval_tokens)):
      stats = sources.SourceStats()
      wanted = max(1, round(w * total))
      docs = _source_documents(name, cfg, stats, held_out=split == "eval")
      n, n_docs = write_tokens(os.path.join(directory, f"{split}_{name}.bin"), docs, tokenizer,
                               wanted)
      if n_docs == 0:
        raise sources.CorpusError(sources.describe_empty(
            {"python": "python_dirs", "files": "files"}.get(name, name), stats))
      entry[split] = {"tokens": n, "documents": n_docs, "requested": wanted,
                      **({} if name == "builtin" else {"skipped": dataclasses.asdict(stats)})}
      note = "" if n == wanted else f" (source exhausted: {wanted:,} requested)"
      progress(f"data: {split} {name}: {n:,} tokens from {n_docs:,} documents{note}")
    manifest["sources"][name] = entry
  atomic_write_json(manifest_path, manifest, indent=2, sort_keys=True)
  return load(directory)


def load(directory: str, expected_config: dict | None = None) -> Dataset:
  """Opens a prepared dataset (shards as read-only memmaps)."""
  with open(os.path.join(directory, MANIFEST)) as f:
    manifest = json.load(f)
  if expected_config is not None and manifest["config"] != expected_config:
    changed = sorted(k for k in set(manifest["config"]) | set(expected_config)
                     if manifest["config"].get(k) != expected_config.get(k))
    raise ValueError(f"the dataset in {directory} was built with a different data config "
                     f"(changed: {', '.join('data.' + k for k in changed)})")
  tokenizer = tok_lib.load_tokenizer(os.path.join(directory, TOKENIZER_FILE))
  if tokenizer.sha256() != manifest["tokenizer_sha256"]:
    raise ValueError(f"{directory}/{TOKENIZER_FILE} does not match the manifest's tokenizer hash")
  dtype = np.dtype(manifest["dtype"])
  shards = {"train": [], "eval": []}
  for name, entry in manifest["sources"].items():
    for split in shards:
      path = os.path.join(directory, f"{split}_{name}.bin")
      arr = np.memmap(path, dtype=dtype, mode="r")
      if len(arr) != entry[split]["tokens"]:
        raise ValueError(f"{path} holds {len(arr)} tokens, the manifest says "
                         f"{entry[split]['tokens']}")
      shards[split].append(arr)
  return Dataset(tokenizer, shards["train"], shards["eval"], manifest)


# ---------------------------------------------------------------------- sampling
class BatchSampler:
  """Random windows of ``seq_len + 1`` tokens over one or more shards (uniform over tokens):
  inputs are ``[:, :-1]``, targets ``[:, 1:]``."""

  def __init__(self, shards, *, batch_size: int, seq_len: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    shards = [shards] if isinstance(shards, np.ndarray) else list(shards)
    if batch_size % process_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by {process_count} processes")
    self.window = seq_len + 1
    self.starts = np.array([max(len(s) - self.window, 0) for s in shards], np.int64)
    if self.starts.sum() == 0:
      raise ValueError(f"no shard is longer than a window of {self.window} tokens")
    self.shards = shards
    self.local_batch = batch_size // process_count
    self.seed = seed
    self.process_index = process_index

  def batch(self, step: int) -> np.ndarray:
    """This process's rows for ``step``: int32 (batch_size / process_count, seq_len + 1).

    The global batch of a step is the same whatever the number of processes (each takes its own
    slice of it), so a run resumed on another number of hosts sees the same data.
    """
    rng = np.random.default_rng([self.seed, step, 0])
    # A position uniform over all valid window starts, then the shard it falls in.
    first = self.process_index * self.local_batch
    flat = rng.integers(0, self.starts.sum(), size=first + self.local_batch)[first:]
    bounds = np.cumsum(self.starts)
    which = np.searchsorted(bounds, flat, side="right")
    offsets = flat - (bounds[which] - self.starts[which])
    out = np.empty((self.local_batch, self.window), np.int32)
    for row, (s, o) in enumerate(zip(which, offsets)):
      out[row] = self.shards[s][o:o + self.window]
    return out
