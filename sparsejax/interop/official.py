"""OpenAI's ``circuit_sparsity`` checkpoints ↔ sparsejax parameters, name by name.

The official model (``circuit_sparsity/inference/gpt.py``) is a torch module; its ``state_dict``
names map onto the pure-dict trees of :func:`sparsejax.train.step.init_model` (``params``: trained,
``buffers``: the rest) as follows (L = layer; ``Linear`` weights are (out, in) in torch and
kernels are (in, out) here, so they are transposed):

  transformer.wte.weight                 params  wte                      (V, D)
  transformer.wpe.weight                 params  wpe (buffers when frozen sinusoids; absent,
                                                 i.e. exported as zeros, for a NoPE model)
  transformer.h.L.ln_1.weight / .bias    params  blocks.L.ln_1.scale / .bias   (also ln_2,
                                                 and ln_p1 / ln_p2 of cat-pos-emb models)
  transformer.h.L.attn.c_attn.weight     params  blocks.L.attn.c_attn.kernel   transposed
  transformer.h.L.attn.c_proj.*          params  blocks.L.attn.c_proj.*        (weight transposed)
  transformer.h.L.attn.attn_imp.sink_logit  params  blocks.L.attn.sink_logit
  transformer.h.L.attn.bias              the causal mask of non-flash models: checked, not kept
  transformer.h.L.mlp.c_fc.* / c_proj.*  params  blocks.L.mlp.c_fc.* / c_proj.* (weights transposed)
  transformer.ln_f.weight / .bias        params  ln_f.scale / .bias
  lm_head.weight                         params  lm_head.kernel, transposed; with a tied
                                                 unembedding it must equal wte and is not kept
  bigram_table                           params (learnable) or buffers   (V, V)
  final_logits_bias                      buffers final_logits_bias; missing → zeros, as the
                                                 official ``load_model`` does

Every official key is accounted for: loaded, filled with its default, checked and dropped, or
reported as unused; a key the model needs that is missing, or of the wrong shape, is an error
naming all of them. Weight sparsity is read as is (exact zeros stay zeros, float16 / bfloat16 are
widened to float32 exactly), and the nonzeros of every sparse matrix are counted for the report.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np
from flax import nnx

from sparsejax.interop.state_dict import SUFFIXES, read_state_dict
from sparsejax.model.config import GPTConfig, load_beeg_config
from sparsejax.model.gpt import GPT
from sparsejax.utils.errors import FileFormatError

CONFIG_FILE = "beeg_config.json"
CHECKPOINT_STEM = "final_model"
HIDDEN, EMBED, OTHER = "hidden", "embed", "other"


class CheckpointMismatchError(FileFormatError):
  """A checkpoint does not fit its config (missing keys, wrong shapes, untied 'tied' head)."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One official state_dict key and where it lives in sparsejax's trees."""

  name: str  # official state_dict key
  collection: str | None  # "params" or "buffers"; None: not kept (zeros / alias / derived)
  path: tuple  # path in that pure dict, e.g. ("blocks", 0, "attn", "c_attn", "kernel")
  transpose: bool = False  # torch Linear weight (out, in) ↔ kernel (in, out)
  group: str = OTHER  # HIDDEN or EMBED matrices get a density line in the report


def _norm_entries(prefix: str, path: tuple, cfg: GPTConfig) -> list[Entry]:
  out = [Entry(f"{prefix}.weight", "params", path + ("scale",))]
  if not cfg.rms_norm and cfg.ln_bias:
    out.append(Entry(f"{prefix}.bias", "params", path + ("bias",)))
  return out


def _linear_entries(prefix: str, path: tuple, cfg: GPTConfig, group: str) -> list[Entry]:
  out = [Entry(f"{prefix}.weight", "params", path + ("kernel",), True, group)]
  if cfg.bias:
    out.append(Entry(f"{prefix}.bias", "params", path + ("bias",)))
  return out


def mask_name(layer: int) -> str:
  """The causal-mask buffer of a non-flash official attention module."""
  return f"transformer.h.{layer}.attn.bias"


def official_entries(cfg: GPTConfig) -> list[Entry]:
  """Every key of the official model's ``state_dict`` for ``cfg``, in torch's order (a module's
  own parameters, then its own buffers, then its children in registration order)."""
  out = []
  if cfg.enable_bigram_table and cfg.learnable_bigram_table:
    out.append(Entry("bigram_table", "params", ("bigram_table",)))
  out.append(Entry("final_logits_bias", "buffers", ("final_logits_bias",)))
  if cfg.enable_bigram_table and not cfg.learnable_bigram_table:
    out.append(Entry("bigram_table", "buffers", ("bigram_table",)))
  out.append(Entry("transformer.wte.weight", "params", ("wte",), group=EMBED))
  if cfg.cat_pos_emb and cfg.sinusoidal_cat_pos_emb:
    wpe = Entry("transformer.wpe.weight", "buffers", ("wpe",))
  elif cfg.nope:
    wpe = Entry("transformer.wpe.weight", None, ())
  else:
    wpe = Entry("transformer.wpe.weight", "params", ("wpe",), group=EMBED)
  out.append(wpe)
  for layer in range(cfg.n_layer):
    h, blk = f"transformer.h.{layer}", ("blocks", layer)
    out += _norm_entries(f"{h}.ln_1", blk + ("ln_1",), cfg)
    if not cfg.flash:
      out.append(Entry(mask_name(layer), None, ()))
    out += _linear_entries(f"{h}.attn.c_attn", blk + ("attn", "c_attn"), cfg, HIDDEN)
    out += _linear_entries(f"{h}.attn.c_proj", blk + ("attn", "c_proj"), cfg, HIDDEN)
    if cfg.sink:
      out.append(Entry(f"{h}.attn.attn_imp.sink_logit", "params", blk + ("attn", "sink_logit")))
    out += _norm_entries(f"{h}.ln_2", blk + ("ln_2",), cfg)
    out += _linear_entries(f"{h}.mlp.c_fc", blk + ("mlp", "c_fc"), cfg, HIDDEN)
    out += _linear_entries(f"{h}.mlp.c_proj", blk + ("mlp", "c_proj"), cfg, HIDDEN)
    if cfg.cat_pos_emb:
      out += _norm_entries(f"{h}.ln_p1", blk + ("ln_p1",), cfg)
      out += _norm_entries(f"{h}.ln_p2", blk + ("ln_p2",), cfg)
  out += _norm_entries("transformer.ln_f", ("ln_f",), cfg)
  if cfg.tied_unembed:
    out.append(Entry("lm_head.weight", None, (), group=EMBED))
  else:
    out.append(Entry("lm_head.weight", "params", ("lm_head", "kernel"), True, EMBED))
  return out


def official_shapes(cfg: GPTConfig, trees: dict | None = None) -> dict[str, tuple[int, ...]]:
  """{official key: its shape in the official model} for ``cfg`` (``trees``: its
  :func:`template`, if already made)."""
  trees = trees or template(cfg)
  shapes = {}
  for e in official_entries(cfg):
    if e.collection is not None:
      shape = tree_get(trees[e.collection], e.path).shape
      shapes[e.name] = shape[::-1] if e.transpose else shape
  shapes["transformer.wpe.weight"] = (cfg.block_size, cfg.d_pos_emb or cfg.d_model)
  shapes["lm_head.weight"] = (cfg.vocab_size, cfg.d_model)
  for layer in range(cfg.n_layer):
    shapes[mask_name(layer)] = (1, 1, cfg.block_size, cfg.block_size)
  return shapes


def template(cfg: GPTConfig) -> dict[str, Any]:
  """{"params": ..., "buffers": ...}: the trees of :func:`init_model` as shape structs (nothing
  is allocated)."""
  model = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))
  _, params, buffers = nnx.split(model, nnx.Param, ...)
  return {"params": nnx.to_pure_dict(params), "buffers": nnx.to_pure_dict(buffers)}


def tree_get(tree, path):
  """The leaf of a nested dict at ``path``."""
  for k in path:
    tree = tree[k]
  return tree


def _leaf_paths(tree, prefix=()) -> list[tuple]:
  if isinstance(tree, dict):
    return [p for k, v in tree.items() for p in _leaf_paths(v, prefix + (k,))]
  return [prefix]


def causal_mask(block_size: int) -> np.ndarray:
  """The official non-flash mask buffer: tril(ones(T, T)) as (1, 1, T, T) float32."""
  return np.tril(np.ones((block_size, block_size), np.float32))[None, None]


# ---------------------------------------------------------------------- the report
@dataclasses.dataclass
class ImportReport:
  """What happened to every key of an imported checkpoint, and the sparsity found in it."""

  source: str
  loaded: list[str] = dataclasses.field(default_factory=list)
  defaulted: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> what was used
  checked: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> check passed
  unused: list[str] = dataclasses.field(default_factory=list)  # in the file, not used
  config_extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # config keys kept
  notes: list[str] = dataclasses.field(default_factory=list)
  # official matrix name -> {"shape", "nonzero", "density"}
  matrices: dict[str, dict] = dataclasses.field(default_factory=dict)

  def group_density(self, group: str) -> float | None:
    rows = [m for m in self.matrices.values() if m["group"] == group]
    total = sum(int(np.prod(m["shape"])) for m in rows)
    return sum(m["nonzero"] for m in rows) / total if total else None

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out["hidden_density"] = self.group_density(HIDDEN)
    out["embed_density"] = self.group_density(EMBED)
    return out

  def lines(self) -> list[str]:
    """The human-readable summary the importer prints."""
    out = [f"checkpoint {self.source}: {len(self.loaded)} tensors loaded"]
    for key, what in self.defaulted.items():
      out.append(f"  missing {key}: {what}")
    for key, what in self.checked.items():
      out.append(f"  checked {key}: {what}")
    if self.unused:
      out.append(f"  unused keys (ignored): {', '.join(self.unused)}")
    if self.config_extra:
      out.append("  config keys sparsejax does not use (kept): "
                 + ", ".join(f"{k}={v!r}" for k, v in sorted(self.config_extra.items())))
    out += [f"  note: {n}" for n in self.notes]
    out.append("  weight density (nonzero / size) of each matrix:")
    width = max((len(k) for k in self.matrices), default=0)
    for key, m in self.matrices.items():
      out.append(f"    {key:<{width}}  {'x'.join(map(str, m['shape'])):>11}  "
                 f"{m['nonzero']:>10,} nonzero  {m['density']:8.4%}")
    for group in (HIDDEN, EMBED):
      d = self.group_density(group)
      if d is not None:
        out.append(f"  {group} matrices: density {d:.4%}")
    return out


def density_row(array: np.ndarray, group: str) -> dict:
  nonzero = int(np.count_nonzero(array))
  return {"shape": list(array.shape), "nonzero": nonzero, "group": group,
          "density": nonzero / array.size if array.size else 0.0}


# ---------------------------------------------------------------------- import / export
def from_official(state: Mapping[str, np.ndarray], cfg: GPTConfig, source: str = "checkpoint"
                  ) -> tuple[dict, dict, ImportReport]:
  """(params, buffers, report): sparsejax's trees for ``cfg`` from an official state_dict.

  Raises:
    CheckpointMismatchError: keys the model needs are missing or have the wrong shape, a tied
      head differs from ``wte``, a causal mask is not causal, or a NoPE model has a nonzero wpe.
  """
  trees = template(cfg)
  shapes = official_shapes(cfg, trees)
  out = {"params": {}, "buffers": {}}
  report = ImportReport(source)
  problems = []

  def fetch(name):
    array = np.asarray(state[name])
    if tuple(array.shape) != tuple(shapes[name]):
      problems.append(f"{name} has shape {tuple(array.shape)}, the config needs "
                      f"{tuple(shapes[name])}")
      return None
    if array.dtype.kind not in "fV" or array.dtype.itemsize not in (2, 4, 8):
      problems.append(f"{name} has dtype {array.dtype}, expected a float type")
      return None
    return array

  entries = official_entries(cfg)
  masks = [mask_name(layer) for layer in range(cfg.n_layer)]
  for e in entries:
    if e.name in masks:  # checked below, whatever the flash setting
      continue
    if e.name not in state:
      if e.name == "final_logits_bias":
        report.defaulted[e.name] = "zeros (as the official load_model does)"
        _set_nested(out, e, np.zeros(shapes[e.name], np.float32))
      elif e.collection is not None:
        problems.append(f"{e.name} is missing")
      continue
    array = fetch(e.name)
    if array is None:
      continue
    if e.group != OTHER and e.collection is not None:
      report.matrices[e.name] = density_row(array, e.group)
    if e.collection is not None:
      value = array.astype(np.float32)
      _set_nested(out, e, np.ascontiguousarray(value.T) if e.transpose else value)
      report.loaded.append(e.name)
    elif e.name == "lm_head.weight":  # tied: the head is wte
      wte = state.get("transformer.wte.weight")
      if wte is not None and not np.array_equal(array, wte):
        problems.append("lm_head.weight differs from transformer.wte.weight, but the config has "
                        "tied_unembed=True")
      else:
        report.checked[e.name] = "equals transformer.wte.weight (tied_unembed)"
    elif e.name == "transformer.wpe.weight":  # NoPE
      if np.any(array):
        problems.append("transformer.wpe.weight is not zero, but the config has nope=True")
      else:
        report.checked[e.name] = "all zeros (nope=True: no position embedding)"
  # Causal masks may be present whatever the flash setting (the official loader overrides it).
  for name in masks:
    if name in state:
      array = fetch(name)
      if array is not None and not np.array_equal(array, causal_mask(cfg.block_size)):
        problems.append(f"{name} is not the causal mask tril(ones)")
      elif array is not None:
        report.checked[name] = "causal mask (derived; not stored)"
  if problems:
    raise CheckpointMismatchError(f"{source} does not fit its config: " + "; ".join(problems))
  used = {e.name for e in entries} | set(masks)
  report.unused = [k for k in state if k not in used]
  for collection in ("params", "buffers"):  # every leaf of the model is filled
    missing = set(_leaf_paths(trees[collection])) - set(_leaf_paths(out[collection]))
    assert not missing, f"no official key maps to {collection} {sorted(missing)}"
  return out["params"], out["buffers"], report


def _set_nested(out: dict, e: Entry, value):
  tree = out[e.collection]
  for k in e.path[:-1]:
    tree = tree.setdefault(k, {})
  tree[e.path[-1]] = value


def to_official(params: Mapping, buffers: Mapping, cfg: GPTConfig) -> dict[str, np.ndarray]:
  """The official state_dict (float32 numpy arrays, torch's key order) of sparsejax trees.

  A NoPE model gets a zero ``wpe`` (the official model always adds one); a tied head is the same
  array object as ``wte`` (so a ``.pt`` file stores it once, as torch does); non-flash configs get
  their causal-mask buffers.
  """
  trees = {"params": params, "buffers": buffers}
  out = {}
  for e in official_entries(cfg):
    if e.collection is not None:
      value = np.asarray(tree_get(trees[e.collection], e.path), np.float32)
      out[e.name] = np.ascontiguousarray(value.T) if e.transpose else value
    elif e.name == "transformer.wpe.weight":
      out[e.name] = np.zeros((cfg.block_size, cfg.d_model), np.float32)
    elif e.name == "lm_head.weight":
      out[e.name] = out["transformer.wte.weight"]
    else:
      out[e.name] = causal_mask(cfg.block_size)
  return out


@dataclasses.dataclass
class OfficialModel:
  """An official model directory read into sparsejax: config, trees and the import report."""

  config: GPTConfig
  params: dict
  buffers: dict
  report: ImportReport
  checkpoint: str  # the file read


def find_checkpoint(src: str) -> str:
  """The ``final_model.{pt,safetensors,npz,...}`` file of a model directory."""
  found = [os.path.join(src, CHECKPOINT_STEM + s) for s in SUFFIXES
           if os.path.isfile(os.path.join(src, CHECKPOINT_STEM + s))]
  if not found:
    raise FileFormatError(f"{src} has no {CHECKPOINT_STEM}.pt (or {', '.join(SUFFIXES[1:])}); "
                          "expected an official model directory")
  if len(found) > 1:
    names = ", ".join(map(os.path.basename, found))
    raise FileFormatError(f"{src} has several checkpoints ({names}); keep one")
  return found[0]


def load_official(src: str, *, reader: str = "safe") -> OfficialModel:
  """Reads an official model directory (``beeg_config.json`` + ``final_model.pt`` or
  ``.safetensors`` / ``.npz``; a ``beeg_config.sparsejax.json`` side file if sparsejax wrote it).
  Nothing is downloaded: ``src`` is a local directory."""
  src = os.fspath(src)
  config_path = os.path.join(src, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileFormatError(f"{src} has no {CONFIG_FILE}; expected an official model directory")
  cfg = load_beeg_config(config_path)
  checkpoint = find_checkpoint(src)
  state = read_state_dict(checkpoint, reader=reader)
  notes = []
  wpe = state.get("transformer.wpe.weight")
  if cfg.nope and wpe is not None and np.any(wpe):
    cfg = cfg.replace(nope=False)
    notes.append("the side file says nope=True but wpe is not zero: loaded as a learned "
                 "position table (nope=False)")
  params, buffers, report = from_official(state, cfg, checkpoint)
  report.config_extra = dict(cfg.extra)
  report.notes += notes
  if cfg.unknown_keys():
    report.notes.append(f"config keys neither sparsejax nor the released configs document: "
                        f"{', '.join(cfg.unknown_keys())}")
  return OfficialModel(cfg, params, buffers, report, checkpoint)
