"""State-dict files in any of three formats: ``.pt`` (torch zip), ``.safetensors``, ``.npz``.

A state_dict here is {official parameter name: numpy array}. Reading never runs code from the
file: ``.pt`` goes through the allow-list unpickler of :mod:`sparsejax.interop.torch_format` (or,
with ``reader="torch"`` and torch installed, ``torch.load(weights_only=True)``), ``.safetensors``
is a JSON header plus raw bytes (the optional ``safetensors`` package, numpy API), and ``.npz`` is
read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import os
from typing import Mapping

import numpy as np

from sparsejax.interop import torch_format
from sparsejax.utils.errors import ConfigError, FileFormatError, UserError
from sparsejax.utils.files import atomic_write, temp_path

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SUFFIXES = TORCH_SUFFIXES + (".safetensors", ".npz")
READERS = ("safe", "torch")


class MissingPackageError(UserError, ImportError):
  """An optional package a file format needs is not installed."""


def _suffix(path: str) -> str:
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in SUFFIXES:
    raise FileFormatError(f"{path}: unknown checkpoint format {suffix or '(no suffix)'!r}; "
                          f"expected one of {', '.join(SUFFIXES)}")
  return suffix


def _require_safetensors():
  try:
    import safetensors.numpy
  except ImportError:
    raise MissingPackageError(".safetensors files need the 'safetensors' package: pip install "
                    "safetensors (or sparsejax[safetensors])") from None
  return safetensors.numpy


def read_state_dict(path: str | os.PathLike, *, reader: str = "safe") -> dict[str, np.ndarray]:
  """{name: array} from a ``.pt`` / ``.pth`` / ``.bin``, ``.safetensors`` or ``.npz`` file.

  Args:
    path: the checkpoint file.
    reader: for torch files, ``"safe"`` (default: the torch-free allow-list unpickler) or
      ``"torch"`` (``torch.load(weights_only=True)``; needs torch).
  """
  path = os.fspath(path)
  suffix = _suffix(path)
  if not os.path.isfile(path):
    raise FileFormatError(f"{path}: no such checkpoint file")
  if reader not in READERS:
    raise ConfigError(f"reader: must be one of {READERS}, got {reader!r}")
  if suffix in TORCH_SUFFIXES:
    return _read_with_torch(path) if reader == "torch" else torch_format.read_torch_checkpoint(path)
  if suffix == ".safetensors":
    st = _require_safetensors()
    try:
      return dict(st.load_file(path))
    except Exception as e:  # the package raises its own error types for damaged files
      raise FileFormatError(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                            f"{e})") from None
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except (ValueError, OSError, EOFError) as e:
    raise FileFormatError(f"{path}: not a readable .npz of arrays ({e})") from None


def _read_with_torch(path: str) -> dict[str, np.ndarray]:
  """``torch.load(weights_only=True)`` (torch's own allow-list), converted to numpy."""
  try:
    import torch
  except ImportError:
    raise MissingPackageError("reader='torch' needs torch installed; the default reader needs none"
                    ) from None
  import ml_dtypes
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for bad files
    raise FileFormatError(f"{path}: torch.load(weights_only=True) refused it "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise FileFormatError(f"{path}: not a state_dict of tensors")
  out = {}
  for k, v in state.items():
    v = v.detach().contiguous()
    if v.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
      out[k] = v.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      out[k] = v.numpy()
  return out


def write_state_dict(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes {name: array} in the format its suffix names, atomically. ``.pt`` is written without
  torch (:func:`torch_format.write_torch_checkpoint`; entries that are one array object share a
  storage); ``.safetensors`` stores each entry separately (the format has no sharing)."""
  path = os.fspath(path)
  suffix = _suffix(path)
  if suffix in TORCH_SUFFIXES:
    torch_format.write_torch_checkpoint(path, tensors)
  elif suffix == ".safetensors":
    st = _require_safetensors()
    tmp = temp_path(path)
    try:
      st.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
                   metadata={"format": "pt"})
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  else:
    buf = io.BytesIO()
    np.savez(buf, **tensors)
    atomic_write(path, buf.getvalue())
