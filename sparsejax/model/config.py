"""Model configuration: the official ``GPTConfig`` fields, validated, with JSON I/O.

Field names, defaults and meanings follow OpenAI's ``circuit_sparsity`` ``GPTConfig``
(Gao et al. 2025, "Weight-sparse transformers have interpretable circuits"), so a released
``beeg_config.json`` loads as is and a saved one is readable by the official loader.

The official ``GPTConfig`` is a dataclass that rejects unknown keywords, so
:func:`save_beeg_config` writes only the official fields (:data:`OFFICIAL_FIELDS`, plus the keys
the official ``load_model`` pops before building it) to ``beeg_config.json``; everything else —
sparsejax-only fields (the "sparsejax fields" block of :class:`GPTConfig`: ``nope``,
``compute_dtype``, ``remat_policy``, ``attention_impl``, ``scan_layers``,
``abstopk_candidates``) and keys of released configs that no field matches (``pfrac``,
``expansion_factor``, ...) — goes to a side file ``beeg_config.sparsejax.json`` next to it. :func:`load_beeg_config` reads both, so a save → load
round trip loses nothing. Keys neither side knows are kept in ``GPTConfig.extra`` and reported.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from absl import logging

from sparsejax.utils.checks import check_field_types
from sparsejax.utils.errors import ConfigError
from sparsejax.utils.files import atomic_write_json, read_json

# Activation-sparsity (AbsTopK) locations, in forward order. The official code accepts these names in
# the comma-separated ``afrac_loctypes``.
LOCTYPES = (
    "attn_in",  # post-ln_1 input to attention
    "attn_q",  # q over the whole n_head * d_head vector (not per head)
    "attn_k",
    "attn_v",
    "attn_out",  # after attention c_proj, before the residual add
    "resid_post_attn",  # residual stream after the attention add
    "mlp_in",  # post-ln_2 input to the MLP
    "mlp_neuron",  # after the MLP nonlinearity
    "mlp_out",  # after the MLP c_proj, before the residual add
    "resid_post_mlp",  # residual stream after the MLP add
)

# Keys of released configs that the official loader drops; we keep them (they describe the run).
KNOWN_EXTRA_KEYS = (
    "pfrac",
    "expansion_factor",
    "expansion_factor_mlp",
    "afrac_approx",
    "ignore_dw_grad",
    "bigram_table_rank",
    "debug_exact_topk",
    "sparse_matmul_impl",
    "rtopk",
    "n_embd",
)

# Fields of the official ``circuit_sparsity`` ``GPTConfig`` (inference/gpt.py), the only keys its
# constructor accepts. Every other GPTConfig field here is sparsejax-only (saved in the side file).
OFFICIAL_FIELDS = (
    "block_size", "vocab_size", "n_layer", "n_head", "d_head", "d_model", "dropout", "bias",
    "ln_bias", "rms_norm", "residual_activation_type", "activation_type", "afrac",
    "afrac_loctypes", "debug_nans", "tied_unembed", "tokenizer_name", "grad_checkpointing", "d_mlp",
    "enable_bigram_table", "learnable_bigram_table", "d_pos_emb", "dropout_cat_pos_emb",
    "sinusoidal_cat_pos_emb", "enable_sparse_kernels", "flash", "sink",
)
# Official fields GPTConfig does not model (kept in ``extra``), with their official defaults.
UNMODELLED_OFFICIAL_DEFAULTS = {"debug_nans": False}
# Keys the official ``load_model`` pops without a default before building its GPTConfig: a
# beeg_config.json without them fails to load there, so they are always written (None if unknown).
LOADER_POPPED_KEYS = ("bigram_table_rank", "pfrac")
# Suffix of the side file that holds what the official format cannot.
SIDE_SUFFIX = ".sparsejax.json"

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
REMAT_POLICIES = ("full", "dots", "qkv_abstopk", "none")
ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPTConfig:
  """Architecture of a (weight-sparse) GPT. Official field names and defaults.

  The paper's models use ``rms_norm=True``, ``tied_unembed=False``, ``n_layer=8``, ``d_head=16``,
  ``vocab_size=2048``, ``enable_bigram_table=True``, ``learnable_bigram_table=True``; the defaults
  below are the official code's (GPT-2-like) defaults, not the paper's choices.
  """

  block_size: int = 1024  # max context length (rows of the learned position table)
  vocab_size: int = 50304  # 2048 in every released model
  n_layer: int = 12  # transformer blocks
  n_head: int = 12  # attention heads
  d_head: int | None = None  # per-head width; None → d_model // n_head
  d_model: int = 768  # residual-stream width
  dropout: float = 0.0  # kept for format compatibility; must be 0 (the paper never uses dropout)
  bias: bool = True  # bias on c_attn, attention c_proj, c_fc, MLP c_proj
  ln_bias: bool = True  # bias of LayerNorm (ignored when rms_norm)
  rms_norm: bool = False  # RMSNorm (learnable gain, no bias, eps = float32 machine eps) vs LayerNorm
  residual_activation_type: str = "identity"  # "relu": ReLU on the residual after each sublayer add
  activation_type: str = "gelu"  # MLP nonlinearity: exact (erf) "gelu" or "relu"
  afrac: float | None = None  # AbsTopK keeps int(afrac * width) entries at each site; None = off
  afrac_loctypes: str = "attn_in,attn_out,mlp_in,mlp_out"  # comma list of LOCTYPES
  tied_unembed: bool = True  # unembedding = wte^T (False in every released model)
  tokenizer_name: str = "tinypython_2k"  # informational
  grad_checkpointing: bool = True  # rematerialise each block in the backward pass (memory only)
  d_mlp: int | None = None  # MLP width; None → 4 * d_model
  enable_bigram_table: bool = False  # add a dense V×V table row B[token] to the logits
  learnable_bigram_table: bool = False  # bigram table is trained (True) or a fixed buffer
  d_pos_emb: int | None = None  # "cat pos emb": position channels concatenated to each block input
  dropout_cat_pos_emb: bool = False  # format compatibility; must be False (no dropout)
  sinusoidal_cat_pos_emb: bool = False  # cat pos emb are frozen sinusoids instead of learned
  enable_sparse_kernels: bool = False  # official custom-CUDA switch; no effect here
  flash: bool = True  # official SDPA switch; no effect here
  sink: bool = False  # per-head attention sink: learnable logit, zero key/value slot

  # --- sparsejax fields (not in the official config; written to the JSON, ignored by its loader).
  nope: bool = False  # no positional embedding at all (the paper's "NoPE"); else wpe is added
  # Activations' dtype (params stay float32): "float32", "bfloat16", or "auto" = bfloat16 on
  # GPU/TPU, float32 on CPU (resolved by jax.default_backend() when the model runs).
  compute_dtype: str = "auto"
  # What grad_checkpointing keeps for the backward pass (nothing else is recomputed without it):
  # "full" only the AbsTopK masks (least memory); "dots" also every matmul output without batch
  # dims (the linear layers: recomputes only norms, activations and attention); "qkv_abstopk"
  # q/k/v and the AbsTopK outputs and masks; "none" no rematerialisation. AbsTopK selections are
  # never recomputed under any policy. "dots" fits the paper's e=4 step at batch 512 in 80 GB
  # (BUILD.md, Benchmark).
  remat_policy: str = "dots"
  # Attention kernel for full sequences: "einsum" (materialised scores; the reference), "xla" or
  # "cudnn" (jax.nn.dot_product_attention), or "auto" = cudnn on GPU for bf16/f16 compute with
  # d_head a multiple of 8 and <= 256, else einsum. Runs that score a few positions
  # (positions_B) use einsum for their last block.
  attention_impl: str = "auto"
  # Run the blocks as a lax.scan over stacked block parameters (compiled once, not n_layer
  # times). Parameters stay per layer: they are stacked inside the forward pass; forward passes
  # that record activations run the Python loop. Off by default: on XLA:CPU it costs +16 %
  # estimated step bytes (stacked residual copies) and did not compile faster (BUILD.md);
  # benchmarks/gpu_suite.sh times both on a GPU.
  scan_layers: bool = False
  abstopk_candidates: int | None = None  # AbsTopK thresholds per search pass; None: by backend

  # Keys read from a JSON file that no field matches, kept so a round trip is lossless.
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  def __post_init__(self):
    check_field_types(self, "GPTConfig")
    self._validate()

  # ---------------------------------------------------------------- derived sizes
  @property
  def head_dim(self) -> int:
    return self.d_head if self.d_head is not None else self.d_model // self.n_head

  @property
  def attn_dim(self) -> int:
    """Width of q, k, v and the attention output y: n_head * d_head."""
    return self.n_head * self.head_dim

  @property
  def mlp_dim(self) -> int:
    return self.d_mlp if self.d_mlp is not None else 4 * self.d_model

  @property
  def loctypes(self) -> tuple[str, ...]:
    """Sites with AbsTopK (empty when ``afrac`` is None)."""
    if self.afrac is None:
      return ()
    return tuple(s.strip() for s in self.afrac_loctypes.split(",") if s.strip())

  @property
  def cat_pos_emb(self) -> bool:
    return self.d_pos_emb is not None

  @property
  def block_in_dim(self) -> int:
    """Input width of c_attn and c_fc (residual + read-only position channels)."""
    return self.d_model + (self.d_pos_emb or 0)

  def abstopk_k(self, width: int) -> int:
    """Entries AbsTopK keeps in a vector of ``width`` (official: int(afrac * width))."""
    assert self.afrac is not None
    return int(self.afrac * width)

  def replace(self, **changes) -> "GPTConfig":
    return dataclasses.replace(self, **changes)

  # ---------------------------------------------------------------- validation
  def _validate(self):
    for name in ("block_size", "vocab_size", "n_layer", "n_head", "d_model"):
      if getattr(self, name) < 1:
        _fail(name, f"must be >= 1, got {getattr(self, name)}")
    if self.d_head is None:
      if self.d_model % self.n_head:
        _fail("d_model", f"must be divisible by n_head={self.n_head} when d_head is None, "
              f"got {self.d_model}")
    elif self.d_head < 1:
      _fail("d_head", f"must be >= 1 or None, got {self.d_head}")
    if self.d_mlp is not None and self.d_mlp < 1:
      _fail("d_mlp", f"must be >= 1 or None, got {self.d_mlp}")
    if self.dropout != 0.0:
      _fail("dropout", f"must be 0.0 (dropout is not supported), got {self.dropout}")
    if self.dropout_cat_pos_emb:
      _fail("dropout_cat_pos_emb", "must be False (dropout is not supported)")
    if self.residual_activation_type not in ("identity", "relu"):
      _fail("residual_activation_type",
            f"must be 'identity' or 'relu', got {self.residual_activation_type!r}")
    if self.activation_type not in ("gelu", "relu"):
      _fail("activation_type", f"must be 'gelu' or 'relu', got {self.activation_type!r}")
    if self.afrac is not None and not 0.0 < self.afrac <= 1.0:  # also rejects NaN
      _fail("afrac", f"must be in (0, 1] or None, got {self.afrac}")
    unknown = [s.strip() for s in self.afrac_loctypes.split(",")
               if s.strip() and s.strip() not in LOCTYPES]
    if unknown:
      _fail("afrac_loctypes", f"unknown loctype(s) {unknown}; valid: {', '.join(LOCTYPES)}")
    if self.afrac is not None:
      smallest = min(self._site_width(s) for s in self.loctypes) if self.loctypes else None
      if smallest is not None and self.abstopk_k(smallest) < 1:
        _fail("afrac", f"afrac={self.afrac} keeps 0 entries of a width-{smallest} site")
    if self.d_pos_emb is not None:
      if self.d_pos_emb < 1:
        _fail("d_pos_emb", f"must be >= 1 or None, got {self.d_pos_emb}")
      if self.nope:
        _fail("nope", "cannot be combined with d_pos_emb (cat pos emb is a positional embedding)")
    if self.sinusoidal_cat_pos_emb and self.d_pos_emb is None:
      _fail("sinusoidal_cat_pos_emb", "requires d_pos_emb")
    if self.compute_dtype not in COMPUTE_DTYPES:
      _fail("compute_dtype", f"must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
    if self.remat_policy not in REMAT_POLICIES:
      _fail("remat_policy", f"must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
    if self.attention_impl not in ATTENTION_IMPLS:
      _fail("attention_impl", f"must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
    if self.abstopk_candidates is not None and self.abstopk_candidates < 1:
      _fail("abstopk_candidates", f"must be >= 1 or None, got {self.abstopk_candidates}")

  def _site_width(self, loctype: str) -> int:
    if loctype in ("attn_q", "attn_k", "attn_v"):
      return self.attn_dim
    if loctype == "mlp_neuron":
      return self.mlp_dim
    return self.d_model

  # ---------------------------------------------------------------- JSON
  def to_dict(self) -> dict[str, Any]:
    """Official-format dict (plus our fields and any preserved unknown keys)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
    out.update(self.extra)
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "GPTConfig":
    """Builds a config from an official-format dict; unknown keys go to ``extra``."""
    if not isinstance(data, Mapping):
      raise ConfigError(f"GPTConfig: expected a JSON object, got {type(data).__name__}")
    data = dict(data)
    if "n_mlp" in data:  # renamed upstream
      if "d_mlp" in data and data["d_mlp"] != data["n_mlp"]:
        _fail("d_mlp", f"conflicts with n_mlp ({data['d_mlp']} vs {data['n_mlp']})")
      data["d_mlp"] = data.pop("n_mlp")
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    return cls(**known, extra=extra)

  def unknown_keys(self) -> list[str]:
    """Keys of ``extra`` that are neither official fields nor documented keys of released
    configs."""
    return sorted(k for k in self.extra if k not in KNOWN_EXTRA_KEYS + OFFICIAL_FIELDS
                  + LOADER_POPPED_KEYS)

  def official_dict(self) -> dict[str, Any]:
    """What the official loader accepts: the official fields, plus the keys its ``load_model``
    pops (taken from ``extra`` when known, else None)."""
    full = self.to_dict()
    out = {k: full.get(k, UNMODELLED_OFFICIAL_DEFAULTS.get(k)) for k in OFFICIAL_FIELDS}
    out.update({k: full.get(k) for k in LOADER_POPPED_KEYS})
    return out

  def sparsejax_dict(self) -> dict[str, Any]:
    """Everything :meth:`official_dict` leaves out: sparsejax-only fields and the other keys of
    ``extra``. ``official_dict() | sparsejax_dict()`` rebuilds this config."""
    official = self.official_dict()
    return {k: v for k, v in self.to_dict().items() if k not in official}


def side_file(path: str | os.PathLike) -> str:
  """The side file of a config file: ``beeg_config.json`` → ``beeg_config.sparsejax.json``."""
  path = os.fspath(path)
  stem = path[:-len(".json")] if path.endswith(".json") else path
  return stem + SIDE_SUFFIX


def load_beeg_config(path: str | os.PathLike) -> GPTConfig:
  """Reads an official ``beeg_config.json`` (or one we wrote, with its side file). Logs unknown
  keys."""
  data = read_json(path, "a beeg_config.json", ConfigError)
  side = side_file(path)
  if isinstance(data, dict) and os.path.exists(side):
    extra = read_json(side, "the sparsejax side file of a beeg_config.json", ConfigError)
    if not isinstance(extra, dict):
      raise ConfigError(f"{side}: expected a JSON object, got {type(extra).__name__}")
    data = {**data, **extra}
  cfg = GPTConfig.from_dict(data)
  if cfg.extra:
    logging.info("%s: keeping keys GPTConfig does not use: %s", path, sorted(cfg.extra))
  if cfg.unknown_keys():
    logging.warning("%s: unrecognised config keys (kept, not used): %s", path, cfg.unknown_keys())
  return cfg


def save_beeg_config(cfg: GPTConfig, path: str | os.PathLike) -> None:
  """Writes ``cfg`` as an official ``beeg_config.json`` (official fields only, so the official
  loader accepts it) and the rest to :func:`side_file` (removed when there is nothing to keep).
  Both writes are atomic."""
  atomic_write_json(path, cfg.official_dict(), indent=2, sort_keys=True)
  rest, side = cfg.sparsejax_dict(), side_file(path)
  if rest:
    atomic_write_json(side, rest, indent=2, sort_keys=True)
  elif os.path.exists(side):
    os.remove(side)


def _fail(field: str, message: str):
  raise ConfigError(f"GPTConfig.{field}: {message}")
