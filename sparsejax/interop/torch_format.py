"""PyTorch's ``torch.save`` zip format, read and written without torch and without running code.

A ``.pt`` file (torch ≥ 1.6) is a zip archive whose entries share one top directory ``A/``:

  A/data.pkl           a pickle (protocol 2) of the object, here a state_dict {name: tensor}
  A/data/<key>         the raw bytes of each storage, in the byte order named by A/byteorder
  A/byteorder          "little" or "big" (absent in old files: little)
  A/version, A/.format_version, A/.storage_alignment   format bookkeeping

In the pickle a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
and a storage is a persistent id ``("storage", torch.FloatStorage, key, location, numel)``.

Why not ``pickle.load``: unpickling calls whatever global the file names, so a checkpoint can run
any command (``os.system``) when it is loaded. :class:`_StateDictUnpickler` resolves a global only
from an allow-list of what a tensor state_dict needs — the tensor rebuild functions, the storage
types, ``collections.OrderedDict`` — each mapped to a function of ours that builds numpy arrays;
any other global is refused with :class:`UnsafeCheckpointError` naming it, before anything runs.

A tensor is element ``offset + Σ_i idx_i · stride_i`` of its storage; views (transposes, slices
with an offset) and tensors that share a storage (tied weights) are rebuilt that way, each as its
own contiguous numpy array. bfloat16 uses ``ml_dtypes.bfloat16`` (a dependency of jax).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from sparsejax.utils.errors import FileFormatError
from sparsejax.utils.files import temp_path

# torch storage class name -> numpy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
_DTYPE_STORAGES = {dtype: name for name, dtype in STORAGE_DTYPES.items()}


class UnsafeCheckpointError(FileFormatError):
  """The checkpoint's pickle names a global that a tensor state_dict does not need."""


class _StorageType:
  """Stands for a torch storage class (``torch.FloatStorage``) inside the pickle."""

  def __init__(self, name: str):
    self.name, self.dtype = name, STORAGE_DTYPES[name]


class _Tensor:
  """A rebuilt tensor: its numpy array. No ``__dict__`` and no ``__setstate__``, so a pickle
  cannot attach state to it (the BUILD opcode fails on it)."""

  __slots__ = ("array",)

  def __init__(self, array: np.ndarray):
    self.array = array


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """``torch._utils._rebuild_tensor`` (and ``_v2``): the strided view of ``storage``, copied."""
  if not isinstance(storage, np.ndarray):
    raise pickle.UnpicklingError("a tensor's storage is not a storage")
  ints = lambda xs: isinstance(xs, tuple) and all(type(x) is int for x in xs)
  if type(storage_offset) is not int or not ints(size) or not ints(stride) or (
      len(size) != len(stride)) or min(size + stride + (storage_offset,), default=0) < 0:
    raise pickle.UnpicklingError(f"bad tensor layout: offset {storage_offset!r}, size {size!r}, "
                                 f"stride {stride!r}")
  if 0 in size:
    return _Tensor(np.zeros(size, storage.dtype))
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size or np.prod(size, dtype=object) > storage.size:
    # (More elements than the storage holds would mean overlapping strides: refused rather
    # than expanded, so a small file cannot ask for an arbitrarily large copy.)
    raise pickle.UnpicklingError(f"a tensor of size {size} at offset {storage_offset} with stride "
                                 f"{stride} reads past its storage of {storage.size} elements")
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size,
      strides=tuple(s * storage.itemsize for s in stride), writeable=False)
  return _Tensor(np.array(view, order="C"))


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
  """``torch._utils._rebuild_parameter`` (``_with_state``): a Parameter is its tensor."""
  if not isinstance(data, _Tensor) or any(state):
    raise pickle.UnpicklingError("a Parameter with extra state is not a plain tensor")
  return data


# (module, name) -> what the pickle gets instead. Nothing else can be named.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


def _from_bytes(raw: bytes, dtype: np.dtype, order: str) -> np.ndarray:
  """Elements of ``dtype`` stored in byte order ``order`` ("<" or ">"), as a native array.
  (Swapped as unsigned integers: ``ml_dtypes.bfloat16`` has no byte-order variants.)"""
  if dtype.itemsize == 1:
    return np.frombuffer(raw, dtype)
  bits = np.frombuffer(raw, np.dtype(f"{order}u{dtype.itemsize}"))
  return bits.astype(np.dtype(f"=u{dtype.itemsize}")).view(dtype)


def _to_le_bytes(a: np.ndarray) -> bytes:
  """The elements of a native contiguous array as little-endian bytes."""
  if a.itemsize == 1:
    return a.tobytes()
  return a.view(np.dtype(f"=u{a.itemsize}")).astype(np.dtype(f"<u{a.itemsize}")).tobytes()


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles a state_dict, resolving only allow-listed globals and reading storages from the
  archive on demand (once per key, so tensors sharing a storage read it once)."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str,
               path: str):
    super().__init__(io.BytesIO(data))
    self._archive, self._prefix, self._path = archive, prefix, path
    self._order = ">" if byteorder == "big" else "<"
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str):
    found = _ALLOWED_GLOBALS.get((module, name))
    if found is None:
      raise UnsafeCheckpointError(
          f"{self._path}: refusing to load: its pickle names the global {module}.{name}, which a "
          "tensor state_dict does not need (loading it could run code). Only tensors, storages "
          "and OrderedDict are read")
    return found

  def persistent_load(self, pid):
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
        or type(pid[4]) is not int):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    _, storage_type, key, _location, numel = pid
    if key not in self._storages:
      name = f"{self._prefix}data/{key}"
      try:
        raw = self._archive.read(name)
      except KeyError:
        raise pickle.UnpicklingError(f"storage record {name} is missing") from None
      if len(raw) != numel * storage_type.dtype.itemsize:
        raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes for {numel} elements of "
                                     f"{storage_type.name}")
      self._storages[key] = _from_bytes(raw, storage_type.dtype, self._order)
    storage = self._storages[key]
    if storage.dtype != storage_type.dtype:
      raise pickle.UnpicklingError(f"storage {key} is read as two different types")
    return storage


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The state_dict in a ``torch.save`` zip file as {name: numpy array}, without torch and
  without running any code from the file.

  Raises:
    UnsafeCheckpointError: the pickle names a global outside the allow-list.
    FileFormatError: anything else that keeps the file from being a tensor state_dict.
  """
  path = os.fspath(path)
  if not zipfile.is_zipfile(path):
    raise FileFormatError(f"{path}: not a zip-format torch checkpoint (torch >= 1.6 writes zip "
                          "files; re-save a legacy file with a current torch.save)")
  try:
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
      if len(pickles) != 1:
        raise FileFormatError(f"{path}: expected one <archive>/data.pkl record, found "
                              f"{len(pickles)}")
      prefix = pickles[0][:-len("data.pkl")]
      names = set(archive.namelist())
      byteorder = (archive.read(prefix + "byteorder").decode("ascii").strip()
                   if prefix + "byteorder" in names else "little")
      if byteorder not in ("little", "big"):
        raise FileFormatError(f"{path}: unknown byte order {byteorder!r}")
      obj = _StateDictUnpickler(archive.read(pickles[0]), archive, prefix, byteorder,
                                path).load()
  except FileFormatError:
    raise
  except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, TypeError, ValueError,
          AttributeError, IndexError, KeyError, struct.error) as e:
    raise FileFormatError(f"{path}: not a readable torch state_dict ({type(e).__name__}: "
                          f"{e})") from None
  if not isinstance(obj, dict):
    raise FileFormatError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
  bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, _Tensor)]
  if bad:
    raise FileFormatError(f"{path}: not a state_dict of tensors (entries {bad[:5]} are not "
                          "name -> tensor)")
  return {k: v.array for k, v in obj.items()}


# ---------------------------------------------------------------------- writing
class _PickleWriter:
  """Emits the protocol-2 opcodes of a state_dict by hand (``pickle.Pickler`` would need the
  torch globals to exist as Python objects)."""

  def __init__(self):
    self.out = bytearray(b"\x80\x02")  # PROTO 2

  def global_(self, module: str, name: str):
    self.out += b"c" + f"{module}\n{name}\n".encode("ascii")

  def str_(self, s: str):
    data = s.encode("utf-8")
    self.out += b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE

  def int_(self, n: int):
    if 0 <= n < 1 << 8:
      self.out += b"K" + bytes([n])  # BININT1
    elif 0 <= n < 1 << 16:
      self.out += b"M" + struct.pack("<H", n)  # BININT2
    elif -(1 << 31) <= n < 1 << 31:
      self.out += b"J" + struct.pack("<i", n)  # BININT
    else:
      data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
      self.out += b"\x8a" + bytes([len(data)]) + data  # LONG1

  def tuple_(self, items):
    self.out += b"("  # MARK
    for x in items:
      self.int_(x)
    self.out += b"t"  # TUPLE

  def tensor(self, key: str, dtype_name: str, numel: int, shape, strides):
    """``_rebuild_tensor_v2(storage, 0, shape, strides, False, OrderedDict())``."""
    self.global_("torch._utils", "_rebuild_tensor_v2")
    self.out += b"(("  # MARK (args) MARK (persistent id)
    self.str_("storage")
    self.global_("torch", dtype_name)
    self.str_(key)
    self.str_("cpu")
    self.int_(numel)
    self.out += b"tQ"  # TUPLE, BINPERSID
    self.int_(0)
    self.tuple_(shape)
    self.tuple_(strides)
    self.out += b"\x89"  # NEWFALSE: requires_grad
    self.global_("collections", "OrderedDict")
    self.out += b")R"  # EMPTY_TUPLE, REDUCE: backward_hooks
    self.out += b"tR"  # TUPLE, REDUCE


def _aligned_entry(archive: zipfile.ZipFile, name: str, data: bytes, alignment: int = 64):
  """Writes a stored (uncompressed) entry whose data starts at a multiple of ``alignment``, as
  torch's writer does (an extra field of padding), so torch can memory-map the storages."""
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  info.compress_type = zipfile.ZIP_STORED
  header = 30 + len(name.encode("utf-8")) + 4  # local header + name + extra-field header
  pad = -(archive.fp.tell() + header) % alignment
  info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
  archive.writestr(info, data)


def write_torch_checkpoint(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes {name: array} as a ``torch.save`` zip file that ``torch.load(weights_only=True)``
  reads back as a state_dict (atomically; without torch).

  Entries that are the same array object share one storage (tied weights stay tied). Storages are
  little-endian, contiguous, at 64-byte-aligned offsets; the output is deterministic.
  """
  path = os.fspath(path)
  archive_name = os.path.splitext(os.path.basename(path))[0] or "archive"
  writer = _PickleWriter()
  storages: dict[int, tuple[str, np.ndarray]] = {}  # id(array) -> (key, contiguous array)
  writer.global_("collections", "OrderedDict")
  writer.out += b")R("  # EMPTY_TUPLE, REDUCE, MARK
  for name, array in tensors.items():
    if id(array) not in storages:
      a = np.asarray(array)
      native = a.dtype if a.dtype.kind == "V" else a.dtype.newbyteorder("=")
      if native not in _DTYPE_STORAGES:
        raise ValueError(f"{name}: dtype {a.dtype} has no torch storage type")
      storages[id(array)] = (str(len(storages)), np.asarray(a, native, order="C"))  # keeps 0-d
    key, a = storages[id(array)]
    writer.str_(name)
    strides = tuple(s // a.itemsize for s in a.strides) if a.size else (0,) * a.ndim
    writer.tensor(key, _DTYPE_STORAGES[a.dtype], a.size, a.shape, strides)
  writer.out += b"u."  # SETITEMS, STOP
  tmp = temp_path(path)
  try:
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
      _aligned_entry(archive, f"{archive_name}/data.pkl", bytes(writer.out))
      _aligned_entry(archive, f"{archive_name}/.format_version", b"1")
      _aligned_entry(archive, f"{archive_name}/.storage_alignment", b"64")
      _aligned_entry(archive, f"{archive_name}/byteorder", b"little")
      for key, a in storages.values():
        _aligned_entry(archive, f"{archive_name}/data/{key}", _to_le_bytes(a))
      _aligned_entry(archive, f"{archive_name}/version", b"3\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
