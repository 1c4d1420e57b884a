"""Type checks of config values against dataclass annotations, with messages naming the field."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from sparsejax.utils.errors import ConfigError


def type_ok(value: Any, expected) -> bool:
  """Whether ``value`` fits an annotation of int, float, bool, str or ``X | None`` (ints are
  accepted for floats: JSON writes 1.0 as 1 sometimes; bools are never ints)."""
  for t in typing.get_args(expected) or (expected,):
    if t is type(None):
      if value is None:
        return True
    elif t is bool:
      if isinstance(value, bool):
        return True
    elif t is int:
      if isinstance(value, int) and not isinstance(value, bool):
        return True
    elif t is float:
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    elif isinstance(t, type) and isinstance(value, t):
      return True
  return False


def type_names(expected) -> str:
  return " or ".join("None" if t is type(None) else getattr(t, "__name__", str(t))
                     for t in typing.get_args(expected) or (expected,))


def check_value(where: str, value: Any, expected) -> None:
  """Raises ``ConfigError("where: expected ..., got ...")`` when ``value`` does not fit."""
  if not type_ok(value, expected):
    raise ConfigError(f"{where}: expected {type_names(expected)}, got {type(value).__name__} "
                      f"{value!r}")


def check_field_types(obj, prefix: str, skip: tuple[str, ...] = ("extra",)) -> None:
  """Checks every field of a dataclass instance against its annotation."""
  hints = typing.get_type_hints(type(obj))
  for f in dataclasses.fields(obj):
    if f.name not in skip:
      check_value(f"{prefix}.{f.name}", getattr(obj, f.name), hints[f.name])
