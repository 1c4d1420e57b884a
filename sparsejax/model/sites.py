"""Activation sites: official names, TransformerLens aliases, reading and intervening.

Every activation a forward pass exposes has the name the official ``circuit_sparsity`` hooks use:

  ``{L}.resid_in``          residual stream entering block L                      (d_model)
  ``{L}.attn.act_in``       attention input after ln_1 (+ cat pos emb, AbsTopK)    (d_model [+ P])
  ``{L}.attn.q|k|v``        query / key / value, all heads side by side            (n_head * d_head)
  ``{L}.attn.y``            attention output before c_proj                         (n_head * d_head)
  ``{L}.attn.resid_delta``  what attention adds to the residual stream             (d_model)
  ``{L}.resid_mid``         residual stream between attention and MLP              (d_model)
  ``{L}.mlp.act_in``        MLP input after ln_2 (+ cat pos emb, AbsTopK)          (d_model [+ P])
  ``{L}.mlp.post_act``      MLP neurons after the nonlinearity (and AbsTopK)       (d_mlp)
  ``{L}.mlp.resid_delta``   what the MLP adds to the residual stream               (d_model)
  ``final_resid``           residual stream before ln_f                            (d_model)
  ``{L}.attn.pattern``      attention probabilities per head      (batch, n_head, query, key)

P = d_pos_emb. Each site's value has shape (batch, seq, width); a *node* is one index along the
width. The attention pattern is the exception: ``pattern[b, h, q, s]`` is how much query position q
of head h attends to key position s (TransformerLens' ``hook_pattern`` layout). With an attention
sink a row sums to less than one: the rest went to the sink, whose value is zero. Asking for a
pattern (or intervening on it) runs that layer's attention materialised, never a fused kernel, so
the pattern is the one that produced ``{L}.attn.y``.

An :class:`Intervention` replaces a site's value by ``mask * x + (1 - mask) * value`` with ``mask``
and ``value`` broadcast against (batch, seq, width). A mask of ones with any value leaves the model
unchanged; a mask of zeros with the pretraining mean is mean ablation; ``value`` of shape
(batch, seq, width) with a zero mask is activation patching. Interventions are plain pytrees passed
to the forward pass as an argument, so ``jax.vmap`` over a stack of masks needs no model changes.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from sparsejax.model.config import GPTConfig
from sparsejax.utils.arrays import lead

LAYER_SITES = (
    "resid_in",
    "attn.act_in",
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.y",
    "attn.resid_delta",
    "resid_mid",
    "mlp.act_in",
    "mlp.post_act",
    "mlp.resid_delta",
)
FINAL_SITE = "final_resid"
PATTERN_SITE = "attn.pattern"  # per layer; shape (batch, n_head, query, key), not nodes
# The per-layer sites whose channels are circuit nodes (sparsejax.circuits): reads, q/k/v, MLP
# neurons and residual writes.
PRUNE_SITES = ("attn.act_in", "attn.q", "attn.k", "attn.v", "attn.resid_delta", "mlp.act_in",
               "mlp.post_act", "mlp.resid_delta")

# TransformerLens hook name → official layer-site suffix. q/k/v/z are flat (n_head * d_head) here,
# where TransformerLens shapes them (..., n_head, d_head).
_TL_LAYER_ALIASES = {
    "hook_resid_pre": "resid_in",
    "ln1.hook_normalized": "attn.act_in",
    "attn.hook_q": "attn.q",
    "attn.hook_k": "attn.k",
    "attn.hook_v": "attn.v",
    "attn.hook_z": "attn.y",
    "hook_attn_out": "attn.resid_delta",
    "hook_resid_mid": "resid_mid",
    "ln2.hook_normalized": "mlp.act_in",
    "mlp.hook_post": "mlp.post_act",
    "hook_mlp_out": "mlp.resid_delta",
    "attn.hook_pattern": PATTERN_SITE,
}
_TL_PATTERN = re.compile(r"^blocks\.(\d+)\.(.+)$")
_OFFICIAL_PATTERN = re.compile(r"^(\d+)\.(.+)$")


class Intervention(NamedTuple):
  """x ← mask * x + (1 - mask) * value at one site. Both broadcast to (batch, seq, width)."""

  mask: jax.Array
  value: jax.Array


Interventions = Mapping[str, Intervention]


def site_names(cfg: GPTConfig) -> list[str]:
  """All official site names of a model, in forward order."""
  names = [f"{layer}.{s}" for layer in range(cfg.n_layer) for s in LAYER_SITES]
  return names + [FINAL_SITE]


def all_site_names(cfg: GPTConfig) -> list[str]:
  """Every name ``run_with_cache`` can record: the node sites and each layer's attention
  pattern."""
  return site_names(cfg) + [f"{layer}.{PATTERN_SITE}" for layer in range(cfg.n_layer)]


def site_width(cfg: GPTConfig, name: str) -> int:
  """Number of nodes (the last dimension) at an official site."""
  suffix = name if name == FINAL_SITE else _OFFICIAL_PATTERN.match(name).group(2)
  if suffix == PATTERN_SITE:
    raise ValueError(f"{name} is an attention pattern (batch, n_head, query, key), not a site "
                     "of nodes")
  if suffix in ("attn.q", "attn.k", "attn.v", "attn.y"):
    return cfg.attn_dim
  if suffix == "mlp.post_act":
    return cfg.mlp_dim
  if suffix in ("attn.act_in", "mlp.act_in"):
    return cfg.block_in_dim
  return cfg.d_model


def canonical_site(name: str, cfg: GPTConfig) -> str:
  """Maps an official or TransformerLens site name to the official one; raises on unknown names."""
  n_layer = cfg.n_layer
  if name == FINAL_SITE or name == "ln_final.hook_scale_input":
    return FINAL_SITE
  m = _TL_PATTERN.match(name)
  if m:
    layer, hook = int(m.group(1)), m.group(2)
    if hook == "hook_resid_post" and layer < n_layer:
      return FINAL_SITE if layer == n_layer - 1 else f"{layer + 1}.resid_in"
    if hook in _TL_LAYER_ALIASES and layer < n_layer:
      return f"{layer}.{_TL_LAYER_ALIASES[hook]}"
  m = _OFFICIAL_PATTERN.match(name)
  if m and int(m.group(1)) < n_layer and (m.group(2) in LAYER_SITES or
                                          m.group(2) == PATTERN_SITE):
    return name
  raise ValueError(
      f"unknown site {name!r}: expected '{{L}}.<site>' with L < {n_layer} and <site> one of "
      f"{', '.join(LAYER_SITES + (PATTERN_SITE,))}; 'final_resid'; or a TransformerLens alias "
      "such as 'blocks.0.hook_resid_pre'")


def canonical_interventions(interventions: Interventions | None, cfg: GPTConfig) -> dict:
  if not interventions:
    return {}
  out = {}
  for name, iv in interventions.items():
    key = canonical_site(name, cfg)
    if key in out:
      raise ValueError(f"site {key!r} is given two interventions (aliases of each other)")
    out[key] = iv if isinstance(iv, Intervention) else Intervention(*iv)
  return out


class SiteTape:
  """Applies interventions and records requested activations during one (traced) forward pass.

  Created inside the traced function, so recording is a trace-time side effect and the recorded
  arrays are returned as ordinary outputs.
  """

  def __init__(self, cfg: GPTConfig, capture: Iterable[str] = (),
               interventions: Interventions | None = None):
    # {name as asked: official name}: the cache is returned under the names asked for.
    self.requested = {n: canonical_site(n, cfg) for n in capture}
    self.capture = frozenset(self.requested.values())
    self.interventions = canonical_interventions(interventions, cfg)
    self.cache: dict[str, jax.Array] = {}

  def wants(self, name: str) -> bool:
    """Whether site ``name`` (official) is recorded or intervened on."""
    return name in self.capture or name in self.interventions

  def as_requested(self) -> dict[str, jax.Array]:
    """The recorded activations under the names they were asked for."""
    return {asked: self.cache[name] for asked, name in self.requested.items()}

  def __call__(self, name: str, x: jax.Array) -> jax.Array:
    iv = self.interventions.get(name)
    if iv is not None:
      mask = lead(jnp.asarray(iv.mask).astype(x.dtype), x.ndim)
      value = lead(jnp.asarray(iv.value).astype(x.dtype), x.ndim)
      x = mask * x + (1 - mask) * value
    if name in self.capture:
      self.cache[name] = x
    return x
