"""Shared by the config files: every RunConfig field, with the library defaults, as a ConfigDict.

Starting from all fields means any of them can be overridden on the command line
(``--config.model.afrac=0.25``): ml_collections only overrides keys that exist, and fields whose
default is None are typed placeholders.
"""

import dataclasses
import typing

import ml_collections
from ml_collections import config_dict

from sparsejax.train.run_config import SECTIONS
from sparsejax.utils.errors import ConfigError


def _field_value(cls, f):
  hint = typing.get_type_hints(cls)[f.name]
  default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
  if default is None:
    inner = [t for t in typing.get_args(hint) if t is not type(None)][0]
    return config_dict.placeholder(inner)
  return default


def base_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  for name, cls in SECTIONS.items():
    cfg[name] = ml_collections.ConfigDict(
        {f.name: _field_value(cls, f) for f in dataclasses.fields(cls) if f.name != "extra"})
  return cfg


def update(cfg: ml_collections.ConfigDict, **sections) -> ml_collections.ConfigDict:
  """Sets fields section by section, refusing keys that are not RunConfig fields."""
  for name, values in sections.items():
    for key, value in values.items():
      if key not in cfg[name]:
        raise ConfigError(f"{name}.{key} is not a config field")
      cfg[name][key] = value
  return cfg
