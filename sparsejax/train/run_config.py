"""The configuration of a training run: model, sparsity, optimizer, data and loop, as dataclasses.

Experiment config files (``experiments/configs/*.py``) return nested dicts (ml_collections
``ConfigDict``s); :meth:`RunConfig.from_dict` turns them into these frozen dataclasses, rejecting
unknown keys and wrong types with one message that names the field (``optim.lr: ...``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from sparsejax.data.dataset import DataConfig
from sparsejax.model.config import GPTConfig
from sparsejax.sparse.optim import OptimConfig
from sparsejax.sparse.sparsity import SparsityConfig
from sparsejax.train.loop import LoopConfig
from sparsejax.utils.checks import check_value
from sparsejax.utils.errors import ConfigError

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
    if not isinstance(data, Mapping):
      raise ConfigError(f"expected a mapping of config sections, got {type(data).__name__}")
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
    check_value(f"{where}.{key}", value, hints[key])
  try:
    return cls(**values)
  except ValueError as e:
    message = str(e)
    prefix = f"{cls.__name__}."
    message = message[len(prefix):] if message.startswith(prefix) else message
    raise ConfigError(f"{where}.{message}" if ":" in message.split()[0] else f"{where}: {message}"
                      ) from None
