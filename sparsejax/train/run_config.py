"""The configuration of a training run: model, sparsity, optimizer, data and loop, as dataclasses.

Experiment config files (``experiments/configs/*.py``) return nested dicts (ml_collections
``ConfigDict``s); :meth:`RunConfig.from_dict` turns them into these frozen dataclasses, rejecting
unknown keys and wrong types with one message that names the field (``optim.lr: ...``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from sparsejax.model.config import ConfigError, GPTConfig
from sparsejax.sparse.optim import OptimConfig
from sparsejax.sparse.sparsity import SparsityConfig

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
  """The training loop."""

  steps: int = 1000  # optimizer steps (the schedules' total)
  batch_size: int = 16  # sequences per step (global, over all processes)
  seq_len: int = 128  # tokens per sequence (<= model.block_size)
  seed: int = 0  # parameter init and batch order
  log_every: int = 50  # progress line + metrics.jsonl row every N steps
  eval_every: int = 250  # held-out loss every N steps (and at the end)
  eval_batches: int = 4  # batches averaged for the held-out loss
  checkpoint_every: int = 500  # orbax checkpoint every N steps (and at the end)
  keep_checkpoints: int = 3  # the last N checkpoints are kept
  fsdp: int = 1  # devices per FSDP group; the mesh is (n_devices / fsdp) x fsdp
  skip_nonfinite: bool = False  # skip steps with a non-finite loss instead of stopping

  def __post_init__(self):
    for name in ("steps", "batch_size", "seq_len", "log_every", "eval_every", "eval_batches",
                 "checkpoint_every", "keep_checkpoints", "fsdp"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")

  # Fields that may change when a run is resumed (they do not change what is computed).
  RESUMABLE_CHANGES = ("log_every", "eval_every", "eval_batches", "checkpoint_every",
                       "keep_checkpoints")


SECTIONS = {"model": GPTConfig, "sparsity": SparsityConfig, "optim": OptimConfig,
            "data": DataConfig, "train": LoopConfig}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  model: GPTConfig
  sparsity: SparsityConfig = SparsityConfig()
  optim: OptimConfig = OptimConfig()
  data: DataConfig = DataConfig()
  train: LoopConfig = LoopConfig()

  def __post_init__(self):
    if self.train.seq_len > self.model.block_size:
      raise ConfigError(f"train.seq_len: {self.train.seq_len} exceeds model.block_size "
                        f"{self.model.block_size}")

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
    unknown = set(data) - set(SECTIONS)
    if unknown:
      raise ConfigError(f"unknown config section(s) {sorted(unknown)}; valid: {sorted(SECTIONS)}")
    if "model" not in data:
      raise ConfigError("the config has no 'model' section")
    return cls(**{name: build(SECTIONS[name], data[name], name) for name in SECTIONS
                  if name in data})

  def to_dict(self) -> dict[str, dict[str, Any]]:
    out = {}
    for name in SECTIONS:
      section = getattr(self, name)
      out[name] = section.to_dict() if hasattr(section, "to_dict") else dataclasses.asdict(section)
    return out


def build(cls, values: Mapping[str, Any], where: str):
  """``cls(**values)`` with unknown keys and wrong types reported as ``where.key: ...``."""
  if not isinstance(values, Mapping):
    raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
  fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ConfigError(f"{where}.{unknown[0]}: unknown key; valid keys: {', '.join(sorted(fields))}")
  if cls is GPTConfig:
    try:
      return GPTConfig.from_dict(values)
    except ConfigError as e:
      raise ConfigError(str(e).replace("GPTConfig.", f"{where}.", 1)) from None
  hints = typing.get_type_hints(cls)
  for key, value in values.items():
    _check_type(f"{where}.{key}", value, hints[key])
  try:
    return cls(**values)
  except ValueError as e:
    message = str(e)
    prefix = f"{cls.__name__}."
    message = message[len(prefix):] if message.startswith(prefix) else message
    raise ConfigError(f"{where}.{message}" if ":" in message.split()[0] else f"{where}: {message}"
                      ) from None


def _check_type(where: str, value, expected) -> None:
  allowed = typing.get_args(expected) or (expected,)
  for t in allowed:
    if t is type(None) and value is None:
      return
    if t is bool and isinstance(value, bool):
      return
    if t is int and isinstance(value, int) and not isinstance(value, bool):
      return
    if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
      return
    if t is str and isinstance(value, str):
      return
  names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
  raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
