"""The weight-sparse GPT of Gao et al. 2025, as Flax NNX modules.

A pre-norm decoder (``x += attn(ln_1(x)); x += mlp(ln_2(x))``) with the official options: RMSNorm or
LayerNorm, fused ``c_attn`` with optional biases, exact GELU or ReLU, attention sinks, a V×V bigram
logits table, learned / concatenated ("cat pos emb") / no positional embedding, tied or untied
unembedding, and AbsTopK activation sparsity at any of the official locations. Sparsity of the
*weights* is not a property of the model: the optimizer keeps them top-k (:mod:`sparsejax.optim`).

Parameters are float32; activations use ``GPTConfig.compute_dtype``; logits are float32. Kernels are
stored (in, out), i.e. transposed relative to the official torch weights. Shape suffixes: B batch,
T sequence, D d_model, I block input width, A n_head * d_head, H heads, K d_head, F d_mlp, V vocab.

Sublayers are numbered 0 .. 2 * n_layer: 2L is block L's attention, 2L + 1 its MLP, and 2 * n_layer
the head. :meth:`GPT.resid_before` runs tokens up to a sublayer's input and :meth:`GPT.logits_from`
runs a residual stream from there to the logits; together they are the full forward pass.

Throughput options (``GPTConfig``'s sparsejax fields), none of which changes what is computed:
``remat_policy`` (what ``grad_checkpointing`` saves; AbsTopK selections are never recomputed),
``attention_impl`` (materialised einsum — the reference — or ``jax.nn.dot_product_attention``,
cuDNN flash attention on GPU; the sink becomes an extra key slot), ``scan_layers`` (the blocks as
one ``lax.scan`` over parameters stacked inside the forward pass; the parameter tree stays per
layer) and ``compute_dtype="auto"``. Under a mesh with ``data``/``fsdp`` axes the residual stream
is constrained to be split over both along the batch.
"""

from __future__ import annotations

import math
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec

from sparsejax.model import sites as sites_lib
from sparsejax.model.config import GPTConfig
from sparsejax.utils.arrays import lead
from sparsejax.sparse.topk import abs_topk

INIT_STD = 0.02
_F32_EPS = float(jnp.finfo(jnp.float32).eps)  # torch RMSNorm(eps=None) on float32 inputs
# Mesh axes the batch is split over (sparsejax.train.distributed builds the mesh with them).
BATCH_AXES = ("data", "fsdp")
_SCAN_LAYER = "L"  # the layer part of site names inside a scanned block


def resolve_compute_dtype(name: str) -> jnp.dtype:
  """``GPTConfig.compute_dtype`` as a dtype: "auto" is bfloat16 on GPU/TPU, float32 on CPU."""
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.dtype(name)


def resolve_attention(cfg: GPTConfig, dtype) -> str:
  """``GPTConfig.attention_impl`` resolved: "auto" is cuDNN on GPU where it applies, else einsum."""
  if cfg.attention_impl != "auto":
    return cfg.attention_impl
  width = _fused_head_dim(cfg.head_dim, cfg.sink)
  if (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
      and width % 8 == 0 and width <= 256):
    return "cudnn"
  return "einsum"


def remat_policy(name: str):
  """The ``jax.checkpoint`` policy of ``GPTConfig.remat_policy`` (None: no rematerialisation)."""
  names = jax.checkpoint_policies.save_only_these_names
  if name == "full":
    return names("abstopk_mask")
  if name == "dots":
    return jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable, names("abstopk_mask"))
  if name == "qkv_abstopk":
    return names("qkv", "abstopk", "abstopk_mask")
  if name == "none":
    return None
  raise ValueError(f"unknown remat policy {name!r}")


def constrain_batch(x):
  """Splits ``x`` over the batch axes (data x fsdp) of the mesh in context, if there is one."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
    return x
  return jax.lax.with_sharding_constraint(x, PartitionSpec(BATCH_AXES, *[None] * (x.ndim - 1)))


def _fused_head_dim(d_head: int, sink: bool) -> int:
  """Head width given to a fused kernel: with a sink, one channel more, padded to a multiple
  of 8."""
  return -(-(d_head + 1) // 8) * 8 if sink else d_head


class Buffer(nnx.Variable):
  """Model state that is not trained (fixed bigram table, frozen sinusoids, final logits bias)."""


class Linear(nnx.Module):
  """y = x @ kernel (+ bias); kernel (in, out) ~ N(0, std²), bias zeros."""

  def __init__(self, d_in: int, d_out: int, *, bias: bool, std: float, rngs: nnx.Rngs):
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (d_in, d_out), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32)) if bias else None

  def __call__(self, x, cols: slice = slice(None)):
    """x @ kernel (+ bias), optionally for a slice of the output columns only."""
    y = x @ self.kernel[...][:, cols].astype(x.dtype)
    if self.bias is not None:
      y = y + lead(self.bias[...][cols].astype(x.dtype), y.ndim)
    return y


def rms(x):
  """The RMSNorm normaliser sqrt(mean(x²) + eps) over the last axis (float32)."""
  xf = x.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(xf * xf, axis=-1) + _F32_EPS)


class Norm(nnx.Module):
  """RMSNorm (gain, no bias, eps = f32 machine eps) or LayerNorm (gain, optional bias, eps 1e-5)."""

  def __init__(self, d: int, *, rms: bool, bias: bool):
    self.rms = rms
    self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((d,), jnp.float32)) if (bias and not rms) else None

  def __call__(self, x):
    xf = x.astype(jnp.float32)
    if self.rms:
      y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + _F32_EPS)
    else:
      xf = xf - jnp.mean(xf, axis=-1, keepdims=True)
      y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + 1e-5)
    y = y * lead(self.scale[...], y.ndim)
    if self.bias is not None:
      y = y + lead(self.bias[...], y.ndim)
    return y.astype(x.dtype)


class _Context:
  """What a forward pass threads through the blocks: config, tape, AbsTopK, cat pos channels."""

  def __init__(self, cfg: GPTConfig, tape: sites_lib.SiteTape, pos_TP, dtype):
    self.cfg = cfg
    self.tape = tape
    self.pos_TP = pos_TP
    self.dtype = dtype
    self.attention = resolve_attention(cfg, dtype)
    self._loctypes = frozenset(cfg.loctypes)

  def with_tape(self, tape: sites_lib.SiteTape) -> "_Context":
    return _Context(self.cfg, tape, self.pos_TP, self.dtype)

  def sparsify(self, x, loctype: str):
    """AbsTopK at an official location, if configured."""
    if loctype in self._loctypes:
      return abs_topk(x, self.cfg.abstopk_k(x.shape[-1]),
                      candidates_per_pass=self.cfg.abstopk_candidates)
    return x

  def with_pos(self, h_BTD, norm: Norm | None, query_B=None):
    """Concatenates the normed read-only position channels (cat pos emb); with ``query_B``,
    ``h`` holds one position per sequence (B, 1, D) and gets that position's channels."""
    if self.pos_TP is None:
      return h_BTD
    p_TP = norm(self.pos_TP).astype(h_BTD.dtype)
    if query_B is not None:
      p_BTP = jnp.take(p_TP, query_B, axis=0)[:, None]
    else:
      p_BTP = jnp.broadcast_to(p_TP, h_BTD.shape[:-1] + p_TP.shape[-1:])
    return jnp.concatenate([h_BTD, p_BTP], axis=-1)


class Attention(nnx.Module):
  """Causal multi-head attention with a fused qkv projection and an optional attention sink."""

  def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
    self.n_head, self.d_head = cfg.n_head, cfg.head_dim
    self.c_attn = Linear(cfg.block_in_dim, 3 * cfg.attn_dim, bias=cfg.bias, std=INIT_STD,
                         rngs=rngs)
    self.c_proj = Linear(cfg.attn_dim, cfg.d_model, bias=cfg.bias,
                         std=INIT_STD / math.sqrt(2 * cfg.n_layer), rngs=rngs)
    # Sink: a per-head logit b_h for an always-visible key slot whose value is zero.
    self.sink_logit = nnx.Param(jnp.zeros((cfg.n_head,), jnp.float32)) if cfg.sink else None

  def __call__(self, x_BTI, ctx: _Context, layer: int, query_B=None):
    """Attention output (B, T, D); with ``query_B`` (one position per sequence) only the output
    at those positions, (B, 1, D): keys and values still cover every position."""
    tape = ctx.tape
    x_BTI = tape(f"{layer}.attn.act_in", ctx.sparsify(x_BTI, "attn_in"))
    A = self.n_head * self.d_head
    if query_B is None:
      q_BTA, k_BTA, v_BTA = jnp.split(checkpoint_name(self.c_attn(x_BTI), "qkv"), 3, axis=-1)
    else:
      x_B1I = jnp.take_along_axis(x_BTI, query_B[:, None, None], axis=1)
      q_BTA = self.c_attn(x_B1I, slice(0, A))
      k_BTA, v_BTA = jnp.split(self.c_attn(x_BTI, slice(A, None)), 2, axis=-1)
    q_BTA = tape(f"{layer}.attn.q", ctx.sparsify(q_BTA, "attn_q"))
    k_BTA = tape(f"{layer}.attn.k", ctx.sparsify(k_BTA, "attn_k"))
    v_BTA = tape(f"{layer}.attn.v", ctx.sparsify(v_BTA, "attn_v"))
    with jax.named_scope("attention"):
      y_BTA = None
      if query_B is None and ctx.attention != "einsum":
        try:
          y_BTA = self._attend_fused(q_BTA, k_BTA, v_BTA, ctx.attention)
        except (NotImplementedError, RuntimeError, ValueError):
          # jax checks cuDNN's support (version, head width, dtype) while tracing: "auto" falls
          # back to the einsum where it says no; an explicit choice reports it.
          if ctx.cfg.attention_impl != "auto":
            raise
      if y_BTA is None:
        y_BTA = self._attend(q_BTA, k_BTA, v_BTA, query_B)
    y_BTA = tape(f"{layer}.attn.y", y_BTA)
    return ctx.sparsify(self.c_proj(y_BTA), "attn_out")

  def _attend_fused(self, q_BTA, k_BTA, v_BTA, implementation: str):
    """Causal attention by ``jax.nn.dot_product_attention`` (``implementation`` "xla" or
    "cudnn": flash attention, scores never in memory).

    The sink (logit b_h, value zero, visible to every query) becomes a real key slot at position
    0: keys and values get one extra channel (padded to a multiple of 8) holding b_h / scale on
    the sink key and 0 elsewhere, queries a constant 1 there, so q'·k'_sink · scale = b_h; a dummy
    query at position 0 keeps the causal mask aligned (query t + 1 sees the sink and keys 0..t)
    and is dropped. Exact, and every gradient (b_h's included) comes from the kernel's own
    backward pass — the kernel's log-sum-exp output has none under cuDNN (its VJP ignores that
    cotangent), so y · σ(lse − b_h) cannot be used for training.
    """
    B, T, _ = q_BTA.shape
    H, K = self.n_head, self.d_head
    split = lambda a: a.reshape(B, T, H, K)
    q, k, v = split(q_BTA), split(k_BTA), split(v_BTA)
    scale = 1.0 / math.sqrt(K)
    if self.sink_logit is None:
      y = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                       implementation=implementation)
      return y.reshape(B, T, H * K)
    width = _fused_head_dim(K, True)
    pad = lambda a, before, after: jnp.pad(a, ((0, 0), (before, 0), (0, 0), (0, after)))
    ones = jnp.ones((B, T, H, 1), q.dtype)
    q = pad(jnp.concatenate([q, ones], axis=-1), 1, width - K - 1)
    sink_key = jnp.zeros((B, 1, H, width), k.dtype).at[:, :, :, K].set(
        (self.sink_logit[...] / scale).astype(k.dtype)[None, None, :])
    k = jnp.concatenate([sink_key, pad(k, 0, width - K)], axis=1)
    v = pad(v, 1, width - K)
    y = jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                     implementation=implementation)
    return y[:, 1:, :, :K].reshape(B, T, H * K)

  def _attend(self, q_BQA, k_BTA, v_BTA, query_B=None):
    """Materialised causal attention (the reference, and the path for scored positions)."""
    B, T, _ = k_BTA.shape
    Q = q_BQA.shape[1]
    split = lambda a: a.reshape(B, a.shape[1], self.n_head, self.d_head)
    q, k, v = split(q_BQA), split(k_BTA), split(v_BTA)
    s_BHTT = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32)
    s_BHTT = s_BHTT / math.sqrt(self.d_head)
    if query_B is None:
      causal = jnp.tril(jnp.ones((T, T), bool))
    else:  # (B, 1, 1, T): query b sees keys at positions <= query_B[b]
      causal = (jnp.arange(T)[None, :] <= query_B[:, None])[:, None, None, :]
    s_BHTT = jnp.where(causal, s_BHTT, jnp.finfo(jnp.float32).min)
    m = jnp.max(s_BHTT, axis=-1, keepdims=True)
    if self.sink_logit is not None:
      b_H11 = self.sink_logit[...][None, :, None, None]
      m = jnp.maximum(m, b_H11)
    p_BHTT = jnp.exp(s_BHTT - m)
    denom = jnp.sum(p_BHTT, axis=-1, keepdims=True)
    if self.sink_logit is not None:
      denom = denom + jnp.exp(b_H11 - m)  # the sink's value is zero: it only adds mass
    p_BHTT = (p_BHTT / denom).astype(v.dtype)
    y = jnp.einsum("bhqs,bshk->bqhk", p_BHTT, v)
    return y.reshape(B, Q, self.n_head * self.d_head)


class MLP(nnx.Module):
  """c_fc → GELU (exact) or ReLU → c_proj."""

  def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
    self.activation = cfg.activation_type
    self.c_fc = Linear(cfg.block_in_dim, cfg.mlp_dim, bias=cfg.bias, std=INIT_STD, rngs=rngs)
    self.c_proj = Linear(cfg.mlp_dim, cfg.d_model, bias=cfg.bias,
                         std=INIT_STD / math.sqrt(2 * cfg.n_layer), rngs=rngs)

  def __call__(self, x_BTI, ctx: _Context, layer: int):
    tape = ctx.tape
    x_BTI = tape(f"{layer}.mlp.act_in", ctx.sparsify(x_BTI, "mlp_in"))
    h_BTF = self.c_fc(x_BTI)
    h_BTF = jax.nn.gelu(h_BTF, approximate=False) if self.activation == "gelu" else jax.nn.relu(
        h_BTF)
    h_BTF = tape(f"{layer}.mlp.post_act", ctx.sparsify(h_BTF, "mlp_neuron"))
    return ctx.sparsify(self.c_proj(h_BTF), "mlp_out")


class Block(nnx.Module):
  """One pre-norm transformer block, run as two sublayers (attention, MLP)."""

  def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
    norm = lambda d: Norm(d, rms=cfg.rms_norm, bias=cfg.ln_bias)
    self.ln_1 = norm(cfg.d_model)
    self.attn = Attention(cfg, rngs=rngs)
    self.ln_2 = norm(cfg.d_model)
    self.mlp = MLP(cfg, rngs=rngs)
    self.ln_p1 = norm(cfg.d_pos_emb) if cfg.cat_pos_emb else None
    self.ln_p2 = norm(cfg.d_pos_emb) if cfg.cat_pos_emb else None

  def sublayer(self, which: int, x_BTD, ctx: _Context, layer: int, query_B=None):
    """Runs the attention (which=0) or MLP (which=1) sublayer on the residual stream.

    With ``query_B`` (one position per sequence) the result is the stream at those positions
    only, (B, 1, D): the attention sublayer takes the whole (B, T, D) stream (its keys and values
    need it), the MLP sublayer takes the (B, 1, D) stream the attention one returned.
    """
    cfg, tape = ctx.cfg, ctx.tape
    if which == 0:
      x_BTD = tape(f"{layer}.resid_in", x_BTD)
      h = ctx.with_pos(self.ln_1(x_BTD), self.ln_p1)
      delta = tape(f"{layer}.attn.resid_delta", self.attn(h, ctx, layer, query_B))
      if query_B is not None:
        x_BTD = jnp.take_along_axis(x_BTD, query_B[:, None, None], axis=1)
      post = "resid_post_attn"
    else:
      x_BTD = tape(f"{layer}.resid_mid", x_BTD)
      h = ctx.with_pos(self.ln_2(x_BTD), self.ln_p2, query_B)
      delta = tape(f"{layer}.mlp.resid_delta", self.mlp(h, ctx, layer))
      post = "resid_post_mlp"
    x_BTD = x_BTD + delta
    if cfg.residual_activation_type == "relu":
      x_BTD = jax.nn.relu(x_BTD)
    return ctx.sparsify(x_BTD, post)


def sinusoidal_positions(block_size: int, d: int):
  """Frozen sinusoids: d // 2 periods log-spaced from 4 to block_size, [sin | cos], zero-padded."""
  half = max(1, d // 2)
  # A constant table: computed in float64 so large angles keep their precision.
  periods = np.logspace(math.log10(4.0), math.log10(max(4.0, float(block_size))), half)
  angles = np.arange(block_size, dtype=np.float64)[:, None] * (2 * math.pi / periods)[None, :]
  enc = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  if enc.shape[1] < d:
    enc = np.pad(enc, ((0, 0), (0, d - enc.shape[1])))
  return jnp.asarray(enc[:, :d], jnp.float32)


class GPT(nnx.Module):
  """The full model. Call it on int tokens (B, T) for float32 logits (B, T, V)."""

  def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    normal = lambda shape: INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)
    self.wte = nnx.Param(normal((cfg.vocab_size, cfg.d_model)))
    if cfg.cat_pos_emb and cfg.sinusoidal_cat_pos_emb:
      self.wpe = Buffer(sinusoidal_positions(cfg.block_size, cfg.d_pos_emb))
    elif cfg.cat_pos_emb:
      self.wpe = nnx.Param(normal((cfg.block_size, cfg.d_pos_emb)))
    elif not cfg.nope:
      self.wpe = nnx.Param(normal((cfg.block_size, cfg.d_model)))
    else:
      self.wpe = None
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layer)])
    self.ln_f = Norm(cfg.d_model, rms=cfg.rms_norm, bias=cfg.ln_bias)
    self.lm_head = None if cfg.tied_unembed else Linear(
        cfg.d_model, cfg.vocab_size, bias=False, std=INIT_STD, rngs=rngs)
    if cfg.enable_bigram_table:
      # Logits += B[current token]. Dense, never top-k'd, never decayed. U[0, 0.02) as in the
      # official training script; a fixed (non-learnable) table is meant to be loaded or set.
      table = 0.02 * jax.random.uniform(rngs.params(), (cfg.vocab_size, cfg.vocab_size))
      self.bigram_table = (nnx.Param if cfg.learnable_bigram_table else Buffer)(table)
    else:
      self.bigram_table = None
    self.final_logits_bias = Buffer(jnp.zeros((cfg.vocab_size,), jnp.float32))

  # ------------------------------------------------------------------ public API
  @property
  def num_sublayers(self) -> int:
    return 2 * self.config.n_layer

  def __call__(self, tokens_BT, *, interventions: sites_lib.Interventions | None = None,
               positions_B=None, final_rms_B=None):
    """Logits (B, T, V) in float32, with optional interventions at any sites.

    With ``positions_B`` (int, one per sequence) only the logits at those positions are computed:
    (B, V). The unembedding is then applied to B vectors instead of B * T. ``final_rms_B`` (with
    positions_B, RMSNorm models) freezes ln_f's normaliser to given values, e.g. the unpruned
    model's, instead of recomputing it from the (intervened) residual stream.
    """
    logits, _ = self.run_with_cache(tokens_BT, (), interventions=interventions,
                                    positions_B=positions_B, final_rms_B=final_rms_B)
    return logits

  def run_with_cache(self, tokens_BT, names: Iterable[str], *,
                     interventions: sites_lib.Interventions | None = None, positions_B=None,
                     final_rms_B=None):
    """Returns (logits, {official site name: activation}) for the requested sites.

    Names may be official (``"0.attn.q"``) or TransformerLens aliases
    (``"blocks.0.attn.hook_q"``); the cache is keyed by the official names.
    """
    tape = sites_lib.SiteTape(self.config, names, interventions)
    ctx = self._context(tokens_BT, tape)
    x = self._embed(tokens_BT)
    if positions_B is not None and self._can_trim_last_block(tape):
      # Only the scored positions leave the last block: its MLP, output projection and queries
      # run on B positions instead of B * T (keys and values still cover every position).
      x = self._run(x, ctx, 0, self.num_sublayers - 2)
      last = self.config.n_layer - 1
      for which in (0, 1):
        x = self.blocks[last].sublayer(which, x, ctx, last, positions_B)
      x = x[:, 0]  # (B, D): already at the scored positions
    else:
      x = self._run(x, ctx, 0, self.num_sublayers)
    return self._head(x, tokens_BT, ctx, positions_B, final_rms_B), tape.cache

  def resid_before(self, tokens_BT, sublayer: int, *,
                   interventions: sites_lib.Interventions | None = None):
    """Residual stream (B, T, D) entering ``sublayer``, before that sublayer's own input site
    (``{L}.resid_in``, ``{L}.resid_mid`` or ``final_resid``) is intervened on."""
    self._check_sublayer(sublayer)
    ctx = self._context(tokens_BT, sites_lib.SiteTape(self.config, (), interventions))
    return self._run(self._embed(tokens_BT), ctx, 0, sublayer)

  def logits_from(self, resid_BTD, sublayer: int, tokens_BT, *,
                  interventions: sites_lib.Interventions | None = None):
    """Logits from a residual stream entering ``sublayer``; ``tokens_BT`` feed the bigram table
    (and fix the sequence length for position channels)."""
    self._check_sublayer(sublayer)
    ctx = self._context(tokens_BT, sites_lib.SiteTape(self.config, (), interventions))
    x = self._run(resid_BTD.astype(self.compute_dtype), ctx, sublayer, self.num_sublayers)
    return self._head(x, tokens_BT, ctx)

  @property
  def compute_dtype(self):
    return resolve_compute_dtype(self.config.compute_dtype)

  # ------------------------------------------------------------------ internals
  def _check_sublayer(self, sublayer: int):
    if not 0 <= sublayer <= self.num_sublayers:
      raise ValueError(f"sublayer must be in [0, {self.num_sublayers}], got {sublayer}")

  def _context(self, tokens_BT, tape):
    cfg = self.config
    T = tokens_BT.shape[-1]
    if T > cfg.block_size:
      raise ValueError(f"sequence length {T} exceeds block_size {cfg.block_size}")
    pos_TP = self.wpe[...][:T] if cfg.cat_pos_emb else None
    return _Context(cfg, tape, pos_TP, self.compute_dtype)

  def _embed(self, tokens_BT):
    cfg = self.config
    x = jnp.take(self.wte[...], tokens_BT, axis=0)
    if self.wpe is not None and not cfg.cat_pos_emb:
      x = x + lead(self.wpe[...][: tokens_BT.shape[-1]], x.ndim)
    return constrain_batch(x.astype(self.compute_dtype))

  def _can_trim_last_block(self, tape: sites_lib.SiteTape) -> bool:
    """The last block may run at the scored positions only when nothing is recorded and every
    intervention is per-channel (no position axis to line up)."""
    return not tape.capture and all(
        jnp.ndim(iv.mask) <= 1 and jnp.ndim(iv.value) <= 1 for iv in tape.interventions.values())

  def _run(self, x_BTD, ctx: _Context, start: int, stop: int):
    """Sublayers [start, stop): whole blocks as one scan when configured (and nothing is
    recorded), the rest one by one."""
    first, last = -(-start // 2), stop // 2  # the whole blocks inside the range
    if self.config.scan_layers and not ctx.tape.capture and last - first >= 2:
      per_layer = self._stacked_interventions(ctx.tape, first, last)
      if per_layer is not None:
        x_BTD = self._run_loop(x_BTD, ctx, start, 2 * first)
        x_BTD = self._scan_blocks(x_BTD, ctx, first, last, per_layer)
        return self._run_loop(x_BTD, ctx, 2 * last, stop)
    return self._run_loop(x_BTD, ctx, start, stop)

  def _sublayer_fn(self, block: Block, which: int, ctx: _Context, layer):
    """``x -> block.sublayer(which, x)``, rematerialised by the configured policy when training
    (never when activations are recorded: they would be tracers of the rematerialised trace)."""
    fn = lambda x: constrain_batch(block.sublayer(which, x, ctx, layer))
    cfg = self.config
    if cfg.grad_checkpointing and cfg.remat_policy != "none" and not ctx.tape.capture:
      return jax.checkpoint(fn, policy=remat_policy(cfg.remat_policy))
    return fn

  def _run_loop(self, x_BTD, ctx: _Context, start: int, stop: int):
    for s in range(start, stop):
      x_BTD = self._sublayer_fn(self.blocks[s // 2], s % 2, ctx, s // 2)(x_BTD)
    return x_BTD

  def _stacked_interventions(self, tape: sites_lib.SiteTape, first: int, last: int):
    """{site suffix: Intervention with a leading layer axis} for blocks [first, last), or None
    when they cannot be stacked (a site intervened in some of the layers only, or with
    different shapes)."""
    out = {}
    for suffix in sites_lib.LAYER_SITES:
      ivs = [tape.interventions.get(f"{layer}.{suffix}") for layer in range(first, last)]
      if all(iv is None for iv in ivs):
        continue
      if any(iv is None for iv in ivs):
        return None
      masks = [jnp.asarray(iv.mask) for iv in ivs]
      values = [jnp.asarray(iv.value) for iv in ivs]
      if len({m.shape for m in masks}) > 1 or len({v.shape for v in values}) > 1:
        return None
      out[f"{_SCAN_LAYER}.{suffix}"] = sites_lib.Intervention(jnp.stack(masks), jnp.stack(values))
    return out

  def _scan_blocks(self, x_BTD, ctx: _Context, first: int, last: int, per_layer: dict):
    """Blocks [first, last) as one ``lax.scan``: their parameters stacked along a new leading
    axis (a copy per forward pass; the parameter tree itself stays per layer)."""
    graphdef, _ = nnx.split(self.blocks[first])
    states = [nnx.split(self.blocks[layer])[1] for layer in range(first, last)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)

    def body(x, xs):
      state, ivs = xs
      block = nnx.merge(graphdef, state)
      layer_ctx = ctx.with_tape(_LayerTape(ivs))
      for which in (0, 1):
        x = self._sublayer_fn(block, which, layer_ctx, _SCAN_LAYER)(x)
      return x, None

    x_BTD, _ = jax.lax.scan(body, x_BTD, (stacked, per_layer))
    return x_BTD

  def _head(self, x_BTD, tokens_BT, ctx: _Context, positions_B=None, final_rms_B=None):
    x_BTD = ctx.tape(sites_lib.FINAL_SITE, x_BTD)
    if positions_B is not None:  # only the scored positions: (B, D) and (B,)
      if x_BTD.ndim == 3:  # not yet selected by a trimmed last block
        x_BTD = jnp.take_along_axis(x_BTD, positions_B[:, None, None], axis=1)[:, 0]
      tokens_BT = jnp.take_along_axis(tokens_BT, positions_B[:, None], axis=1)[:, 0]
    if final_rms_B is not None:
      if positions_B is None or not self.config.rms_norm:
        raise ValueError("final_rms_B needs positions_B and an RMSNorm model")
      h = (x_BTD.astype(jnp.float32) / final_rms_B[:, None]
           * self.ln_f.scale[...][None, :]).astype(x_BTD.dtype)
    else:
      h = self.ln_f(x_BTD)
    if self.lm_head is None:
      logits = h @ self.wte[...].astype(h.dtype).T
    else:
      logits = self.lm_head(h)
    logits = logits.astype(jnp.float32) + lead(self.final_logits_bias[...], logits.ndim)
    if self.bigram_table is not None:
      logits = logits + jnp.take(self.bigram_table[...], tokens_BT, axis=0)
    return logits


class _LayerTape(sites_lib.SiteTape):
  """The tape of one scanned block: that layer's interventions, keyed ``L.<site suffix>``."""

  def __init__(self, interventions: dict):
    self.capture = frozenset()
    self.interventions = interventions
    self.cache = {}


def merge(graphdef, params, buffers) -> GPT:
  """The model back from its parts (``nnx.split`` state as pure dicts; inside or outside jit)."""
  return nnx.merge(graphdef, params, buffers)


def with_config(graphdef, params, buffers, **changes):
  """The graphdef of the same model with config fields changed (e.g. ``grad_checkpointing``);
  ``params`` and ``buffers`` fit it unchanged when the changes do not alter the parameters."""
  cfg = merge(graphdef, params, buffers).config.replace(**changes)
  return nnx.graphdef(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))))


def param_count(model: GPT) -> int:
  """Number of trainable parameters."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
