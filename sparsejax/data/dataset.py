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

Finite sources (Python trees, user files) are scanned once before anything is built: the usable
documents are counted, what was skipped is reported with the reason, and the held-out split is
planned. A document is held out when its content hash is 0 mod 50; a source where that picks
none still gets one held-out document (the one with the smallest hash), and a source that is a
single document holds out its last tenth (by lines), so a small user corpus is always usable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Callable, Iterable, Iterator

import numpy as np

from sparsejax.data import corpus
from sparsejax.data import sources
from sparsejax.data import tokenizer as tok_lib
from sparsejax.data.tokenizer import Tokenizer
from sparsejax.utils.errors import ConfigError, FileFormatError, PathError, os_reason
from sparsejax.utils.files import atomic_write_json, read_json, temp_path

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
      raise ConfigError(f"tokenizer: must be one of {TOKENIZERS}, got {self.tokenizer!r}")
    if self.tokenizer in ("tinypython", "file") and not self.tokenizer_path:
      raise ConfigError(f"tokenizer_path: required for tokenizer={self.tokenizer!r}")
    if self.train_tokens < 1 or self.eval_tokens < 1:
      raise ConfigError("train_tokens: train_tokens and eval_tokens must be >= 1")
    weights = (self.builtin_weight, self.python_weight, self.files_weight)
    if min(weights) < 0 or sum(weights) <= 0:
      raise ConfigError("builtin_weight: source weights must be >= 0 with a positive sum")
    if self.files_weight > 0 and not self.files.strip():
      raise ConfigError("files: files_weight > 0 needs at least one path in data.files")
    if self.bpe_vocab_size < 258:
      raise ConfigError(f"bpe_vocab_size: must be >= 258, got {self.bpe_vocab_size}")


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
  try:
    with open(tmp, "wb") as f:
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
  except OSError as e:
    raise PathError(f"{path} could not be written ({os_reason(e)})") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return written, docs_used


# ---------------------------------------------------------------------- the dataset
@dataclasses.dataclass
class Dataset:
  tokenizer: Tokenizer
  train: list[np.ndarray]  # one memmap per source
  eval: list[np.ndarray]
  manifest: dict


def _doc_hash(doc: str) -> int:
  return int.from_bytes(hashlib.sha256(doc.encode("utf-8", "replace")).digest()[:4], "little")


@dataclasses.dataclass
class SourcePlan:
  """What a scan of a finite source found, and how its documents split into train / held-out."""

  documents: int  # usable documents
  held_out: int  # of which held out
  stats: sources.SourceStats  # files read and what was skipped, and why
  extra_held_out: int | None = None  # hash of a document held out because the 1-in-50 rule
  #                                    picked none
  split_lone: bool = False  # one document: its last tenth (by lines) is the held-out split

  def describe(self, name: str) -> str:
    held = ("the last tenth of the one document is held out" if self.split_lone
            else f"{self.held_out} held out")
    return (f"data: {name}: {self.documents:,} usable document{'' if self.documents == 1 else 's'}"
            f" from {self.stats.files:,} file{'' if self.stats.files == 1 else 's'} ({held}); "
            f"skipped: {self.stats.describe_skipped()}")


def plan_source(name: str, cfg) -> SourcePlan:
  """Scans a finite source once: usable documents, skips, and the held-out plan."""
  stats = sources.SourceStats()
  hashes = [_doc_hash(d) for d in _raw_documents(name, cfg, stats)]
  if not hashes:
    where = {"python": cfg.python_dirs or "the standard library", "files": cfg.files}[name]
    raise sources.CorpusError(sources.describe_empty(
        {"python": "python_dirs", "files": "files"}[name], stats, f" in {where}"))
  held = sum(h % EVAL_EVERY == 0 for h in hashes)
  plan = SourcePlan(len(hashes), held, stats)
  if len(hashes) == 1:
    plan.split_lone, plan.held_out = True, 0
  elif held == 0:
    plan.extra_held_out, plan.held_out = min(hashes), 1
  return plan


def _cut_lone(doc: str) -> tuple[str, str]:
  """(train part, held-out part) of a source's only document: its last tenth by lines (by
  characters when it is one line), each part non-empty."""
  lines = doc.splitlines(keepends=True)
  if len(lines) >= 2:
    k = len(lines) - max(1, len(lines) // 10)
    return "".join(lines[:k]), "".join(lines[k:])
  k = len(doc) - max(1, len(doc) // 10)
  return doc[:k], doc[k:]


def _split(docs: Iterable[str], held_out: bool, plan: SourcePlan) -> Iterator[str]:
  """Deterministic train / held-out split of a finite source by content hash (see the module
  docstring)."""
  for d in docs:
    if plan.split_lone:
      yield _cut_lone(d)[1 if held_out else 0]
      continue
    h = _doc_hash(d)
    if (h % EVAL_EVERY == 0 or h == plan.extra_held_out) == held_out:
      yield d


def _raw_documents(name: str, cfg, stats: sources.SourceStats) -> Iterator[str]:
  if name == "python":
    return sources.python_files(_paths(cfg.python_dirs) or sources.default_python_dirs(), stats)
  if name == "files":
    return sources.user_files(_paths(cfg.files), stats)
  raise ValueError(f"unknown source {name!r}")


def _source_documents(name: str, cfg, stats: sources.SourceStats, held_out: bool,
                      plans: dict[str, SourcePlan]):
  if name == "builtin":
    return corpus.iter_documents(cfg.seed, start=EVAL_DOC_OFFSET if held_out else 0)
  return _split(_raw_documents(name, cfg, stats), held_out, plans[name])


def _paths(csv: str) -> list[str]:
  return [p.strip() for p in csv.split(",") if p.strip()]


def source_weights(cfg) -> dict[str, float]:
  weights = {"builtin": cfg.builtin_weight, "python": cfg.python_weight,
             "files": cfg.files_weight}
  weights = {k: v for k, v in weights.items() if v > 0}
  total = sum(weights.values())
  return {k: v / total for k, v in weights.items()}


def _tokenizer_texts(cfg, weights: dict[str, float], plans: dict[str, SourcePlan],
                     count: list[int]) -> Iterator[str]:
  """Training text for the BPE: documents from each source in proportion to its weight. ``count``
  accumulates [documents, characters] for the error message of a corpus too small."""
  for name, w in weights.items():
    budget = int(w * cfg.tokenizer_train_chars)
    used = 0
    for doc in _source_documents(name, cfg, sources.SourceStats(), False, plans):
      yield doc
      used += len(doc)
      count[0] += 1
      count[1] += len(doc)
      if used >= budget:
        break


def make_tokenizer(cfg, weights: dict[str, float],
                   plans: dict[str, SourcePlan] | None = None) -> Tokenizer:
  if cfg.tokenizer == "bytes":
    return tok_lib.ByteTokenizer()
  if cfg.tokenizer == "bpe":
    plans = plans if plans is not None else {n: plan_source(n, cfg) for n in weights
                                             if n != "builtin"}
    count = [0, 0]
    try:
      return tok_lib.train_bpe(_tokenizer_texts(cfg, weights, plans, count), cfg.bpe_vocab_size)
    except tok_lib.TokenizerError as e:
      raise sources.CorpusError(
          f"data.bpe_vocab_size: the corpus text ({count[1]:,} characters in {count[0]:,} "
          f"document{'' if count[0] == 1 else 's'}) supports only {e.learned + 1} BPE tokens, "
          f"{cfg.bpe_vocab_size} were requested; add text (data.files, data.builtin_weight), "
          "lower data.bpe_vocab_size and model.vocab_size together, or use "
          "data.tokenizer=bytes") from None
  if cfg.tokenizer == "tinypython":
    return tok_lib.load_tinypython(cfg.tokenizer_path)
  if cfg.tokenizer == "file":
    return tok_lib.load_tokenizer(cfg.tokenizer_path)
  raise ConfigError(f"data.tokenizer: unknown tokenizer {cfg.tokenizer!r}")


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


def built_with(directory: str, cfg) -> bool:
  """Whether ``directory`` holds a dataset built from DataConfig ``cfg``."""
  try:
    manifest = read_json(os.path.join(directory, MANIFEST), "a data manifest")
  except (FileFormatError, PathError, FileNotFoundError):
    return False
  return isinstance(manifest, dict) and manifest.get("config") == dataclasses.asdict(cfg)


def prepare(cfg, directory: str, progress: Callable[[str], None] = print) -> Dataset:
  """Builds the dataset of ``cfg`` (a DataConfig) in ``directory``, or loads it if already built."""
  manifest_path = os.path.join(directory, MANIFEST)
  if os.path.exists(manifest_path):
    return load(directory, expected_config=dataclasses.asdict(cfg))
  check_sources(cfg)
  weights = source_weights(cfg)
  plans = {}
  for name in weights:
    if name != "builtin":  # before anything is written: an unusable corpus fails here
      plans[name] = plan_source(name, cfg)
      progress(plans[name].describe(name))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise PathError(f"{directory} cannot be created ({os_reason(e)})") from None
  tokenizer = make_tokenizer(cfg, weights, plans)
  tokenizer.save(os.path.join(directory, TOKENIZER_FILE))
  progress(f"data: tokenizer {tokenizer.name} ({tokenizer.vocab_size} tokens, "
           f"EOT {tokenizer.eot_id})")
  manifest = {"config": dataclasses.asdict(cfg), "tokenizer": tokenizer.name,
              "tokenizer_sha256": tokenizer.sha256(), "vocab_size": tokenizer.vocab_size,
              "eot_id": tokenizer.eot_id, "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name,
              "sources": {}}
  for name, w in weights.items():
    entry = {"weight": w}
    if name in plans:
      entry["usable_documents"] = plans[name].documents
    for split, total in (("train", cfg.train_tokens), ("eval", cfg.eval_tokens)):
      stats = sources.SourceStats()
      wanted = max(1, round(w * total))
      docs = _source_documents(name, cfg, stats, split == "eval", plans)
      n, n_docs = write_tokens(os.path.join(directory, f"{split}_{name}.bin"), docs, tokenizer,
                               wanted)
      if n_docs == 0:  # only when every document hashed into the held-out split
        raise sources.CorpusError(f"data.{name}: none of its {plans[name].documents} usable "
                                  f"documents is left for the {split} split; add documents")
      entry[split] = {"tokens": n, "documents": n_docs, "requested": wanted,
                      **({} if name == "builtin" else {"skipped": dataclasses.asdict(stats)})}
      note = "" if n == wanted else f" (source exhausted: {wanted:,} requested)"
      progress(f"data: {split} {name}: {n:,} tokens from {n_docs:,} documents{note}")
    manifest["sources"][name] = entry
  atomic_write_json(manifest_path, manifest, indent=2, sort_keys=True)
  return load(directory)


def load(directory: str, expected_config: dict | None = None) -> Dataset:
  """Opens a prepared dataset (shards as read-only memmaps)."""
  manifest_path = os.path.join(directory, MANIFEST)
  manifest = read_json(manifest_path, "a data manifest")
  try:
    config, sources_ = manifest["config"], manifest["sources"]
    dtype = np.dtype(manifest["dtype"])
    tokenizer_sha = manifest["tokenizer_sha256"]
    counts = {(name, split): int(entry[split]["tokens"]) for name, entry in sources_.items()
              for split in ("train", "eval")}
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise FileFormatError(f"{manifest_path}: not a data manifest ({type(e).__name__}: {e}); "
                          "delete the data directory to rebuild it") from None
  if expected_config is not None and config != expected_config:
    changed = sorted(k for k in set(config) | set(expected_config)
                     if config.get(k) != expected_config.get(k))
    raise ConfigError(f"the dataset in {directory} was built with a different data config "
                      f"(changed: {', '.join('data.' + k for k in changed)})")
  tokenizer = tok_lib.load_tokenizer(os.path.join(directory, TOKENIZER_FILE))
  if tokenizer.sha256() != tokenizer_sha:
    raise FileFormatError(f"{directory}/{TOKENIZER_FILE} does not match the manifest's tokenizer "
                          "hash")
  shards = {"train": [], "eval": []}
  for (name, split), expected in counts.items():
    path = os.path.join(directory, f"{split}_{name}.bin")
    try:
      arr = np.memmap(path, dtype=dtype, mode="r") if expected else np.zeros(0, dtype)
    except (OSError, ValueError) as e:
      raise FileFormatError(f"{path} cannot be read ({e}); delete the data directory to rebuild "
                            "it") from None
    if len(arr) != expected:
      raise FileFormatError(f"{path} holds {len(arr)} tokens, the manifest says {expected}")
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
