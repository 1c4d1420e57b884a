import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.model import sites
from sparsejax.model.gpt import GPT, param_count
from conftest import ALL_LOCTYPES, tiny_config

VARIANTS = {
    "paper": {},
    "abstopk_sink": dict(afrac=0.25, afrac_loctypes=ALL_LOCTYPES, sink=True),
    "layernorm_tied_relu": dict(rms_norm=False, tied_unembed=True, activation_type="relu",
                                residual_activation_type="relu", enable_bigram_table=False),
    "catpos": dict(d_pos_emb=8, afrac=0.5, afrac_loctypes="attn_in,mlp_in"),
    "catpos_sinusoid": dict(d_pos_emb=7, sinusoidal_cat_pos_emb=True),
    "nope_nobias": dict(nope=True, bias=False),
    "remat_fixed_bigram": dict(grad_checkpointing=True, learnable_bigram_table=False),
}


def build(**overrides):
  cfg = tiny_config(**overrides)
  return cfg, GPT(cfg, rngs=nnx.Rngs(0))


def tokens(seed=1, shape=(2, 16), vocab=64):
  return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_causality(variant):
  cfg, model = build(**VARIANTS[variant])
  toks = tokens()
  logits = model(toks)
  assert logits.shape == (2, 16, 64) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  changed = toks.at[:, 9:].set((toks[:, 9:] + 7) % 64)
  logits2 = model(changed)
  np.testing.assert_array_equal(np.asarray(logits[:, :9]), np.asarray(logits2[:, :9]))
  assert not np.allclose(np.asarray(logits[:, 9:]), np.asarray(logits2[:, 9:]))


def test_init_statistics():
  cfg, model = build(d_model=256, d_mlp=512, n_head=8, d_head=32, n_layer=4, vocab_size=512)
  std = lambda x: float(jnp.std(x[...]))
  b = model.blocks[0]
  assert std(model.wte) == pytest.approx(0.02, rel=0.05)
  assert std(b.attn.c_attn.kernel) == pytest.approx(0.02, rel=0.05)
  assert std(b.mlp.c_fc.kernel) == pytest.approx(0.02, rel=0.05)
  for proj in (b.attn.c_proj.kernel, b.mlp.c_proj.kernel):
    assert std(proj) == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05)
  assert not np.asarray(b.mlp.c_fc.bias[...]).any()
  assert (np.asarray(b.ln_1.scale[...]) == 1).all()


@pytest.mark.parametrize("loctype, site, width_attr", [
    ("attn_in", "0.attn.act_in", "d_model"), ("attn_q", "0.attn.q", "attn_dim"),
    ("attn_k", "1.attn.k", "attn_dim"), ("attn_v", "1.attn.v", "attn_dim"),
    ("attn_out", "0.attn.resid_delta", "d_model"), ("mlp_in", "1.mlp.act_in", "d_model"),
    ("mlp_neuron", "0.mlp.post_act", "mlp_dim"), ("mlp_out", "1.mlp.resid_delta", "d_model"),
    ("resid_post_attn", "0.resid_mid", "d_model"), ("resid_post_mlp", "1.resid_in", "d_model"),
])
def test_abstopk_keeps_exactly_k_per_row_at_each_site(loctype, site, width_attr):
  cfg, model = build(afrac=0.25, afrac_loctypes=loctype)
  _, cache = model.run_with_cache(tokens(), [site, "0.resid_in"])
  k = int(0.25 * getattr(cfg, width_attr))
  nnz = np.count_nonzero(np.asarray(cache[site]), axis=-1)
  assert (nnz == k).all(), (site, nnz.min(), nnz.max(), k)
  # A site without AbsTopK stays dense.
  assert (np.count_nonzero(np.asarray(cache["0.resid_in"]), axis=-1) == cfg.d_model).all()


def test_attention_sink_matches_explicit_softmax():
  cfg, model = build(sink=True)
  model.blocks[0].attn.sink_logit[...] = jnp.array([0.0, 1.0, -2.0, 3.0])
  toks = tokens()
  _, cache = model.run_with_cache(toks, ["0.attn.q", "0.attn.k", "0.attn.v", "0.attn.y"])
  q, k, v = (np.asarray(cache[f"0.attn.{n}"], np.float64).reshape(2, 16, 4, 8) for n in "qkv")
  b = np.array([0.0, 1.0, -2.0, 3.0])
  y = np.zeros_like(q)
  for h in range(4):
    for t in range(16):
      for bi in range(2):
        scores = k[bi, : t + 1, h] @ q[bi, t, h] / math.sqrt(8)
        logits = np.concatenate([[b[h]], scores])
        p = np.exp(logits - logits.max())
        p /= p.sum()
        y[bi, t, h] = p[1:] @ v[bi, : t + 1, h]  # the sink slot's value is zero
  np.testing.assert_allclose(np.asarray(cache["0.attn.y"]).reshape(y.shape), y, atol=1e-5)


def test_huge_sink_logit_silences_the_head():
  cfg, model = build(sink=True)
  model.blocks[0].attn.sink_logit[...] = jnp.array([50.0, 0.0, 0.0, 0.0])
  _, cache = model.run_with_cache(tokens(), ["0.attn.y"])
  y = np.asarray(cache["0.attn.y"]).reshape(2, 16, 4, 8)
  assert np.abs(y[:, :, 0]).max() < 1e-12
  assert np.abs(y[:, :, 1]).max() > 1e-3


def test_bigram_table_adds_its_row_to_the_logits():
  cfg, model = build()
  toks = tokens()
  with_table = model(toks)
  table = np.asarray(model.bigram_table[...])
  model.bigram_table[...] = jnp.zeros_like(model.bigram_table[...])
  without = model(toks)
  np.testing.assert_allclose(np.asarray(with_table - without), table[np.asarray(toks)], atol=1e-6)


def test_parameter_kinds_per_variant():
  _, m = build(learnable_bigram_table=False, d_pos_emb=6, sinusoidal_cat_pos_emb=True)
  params = nnx.state(m, nnx.Param)
  assert "bigram_table" not in params and "wpe" not in params  # buffers, not trained
  assert m.blocks[0].attn.c_attn.kernel[...].shape == (32 + 6, 3 * 32)
  _, m = build(nope=True)
  assert m.wpe is None
  _, m = build(tied_unembed=True)
  assert m.lm_head is None
  _, m = build(bias=False)
  assert m.blocks[0].mlp.c_fc.bias is None
  cfg, m = build()
  assert param_count(m) == sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def test_tied_unembedding_uses_wte():
  cfg, model = build(tied_unembed=True, enable_bigram_table=False)
  toks = tokens()
  logits, cache = model.run_with_cache(toks, ["final_resid"])
  h = model.ln_f(cache["final_resid"])
  np.testing.assert_allclose(np.asarray(logits), np.asarray(h @ model.wte[...].T), atol=1e-5)


def test_sinusoidal_positions_are_log_spaced():
  from sparsejax.model.gpt import sinusoidal_positions
  enc = np.asarray(sinusoidal_positions(64, 8))
  # First channel has period 4, the 4th (last sine) period 64.
  np.testing.assert_allclose(enc[:, 0], np.sin(2 * np.pi * np.arange(64) / 4), atol=1e-5)
  np.testing.assert_allclose(enc[:, 3], np.sin(2 * np.pi * np.arange(64) / 64), atol=1e-5)
  np.testing.assert_allclose(enc[:, 4], np.cos(2 * np.pi * np.arange(64) / 4), atol=1e-5)


# ------------------------------------------------------------------ sites and interventions
def test_run_with_cache_all_sites_and_aliases():
  cfg, model = build()
  names = sites.site_names(cfg)
  logits, cache = model.run_with_cache(tokens(), names)
  assert set(cache) == set(names)
  for n in names:
    assert cache[n].shape == (2, 16, sites.site_width(cfg, n)), n
  _, tl = model.run_with_cache(tokens(), ["blocks.1.hook_mlp_out", "blocks.0.attn.hook_q",
                                          "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
  np.testing.assert_array_equal(tl["1.mlp.resid_delta"], cache["1.mlp.resid_delta"])
  np.testing.assert_array_equal(tl["0.attn.q"], cache["0.attn.q"])
  np.testing.assert_array_equal(tl["1.resid_in"], cache["1.resid_in"])
  np.testing.assert_array_equal(tl["final_resid"], cache["final_resid"])
  # resid_mid = resid_in + attention delta (identity residual activation).
  np.testing.assert_allclose(cache["0.resid_mid"], cache["0.resid_in"] +
                             cache["0.attn.resid_delta"], atol=1e-6)


def test_unknown_site_is_a_clear_error():
  cfg, model = build()
  with pytest.raises(ValueError, match="unknown site '0.attn.bogus'"):
    model.run_with_cache(tokens(), ["0.attn.bogus"])
  with pytest.raises(ValueError, match="unknown site '5.resid_in'"):
    model(tokens(), interventions={"5.resid_in": sites.Intervention(1.0, 0.0)})


def test_all_ones_masks_change_nothing_and_zero_masks_do():
  cfg, model = build(afrac=0.5, afrac_loctypes=ALL_LOCTYPES, sink=True)
  toks = tokens()
  base = model(toks)
  ones = {n: sites.Intervention(jnp.ones(sites.site_width(cfg, n)), jnp.full(
      sites.site_width(cfg, n), 3.0)) for n in sites.site_names(cfg)}
  np.testing.assert_array_equal(np.asarray(model(toks, interventions=ones)), np.asarray(base))
  for site in ("0.attn.q", "1.mlp.post_act", "0.attn.resid_delta", "1.mlp.act_in"):
    w = sites.site_width(cfg, site)
    mask = jnp.ones(w).at[: w // 2].set(0.0)
    out = model(toks, interventions={site: sites.Intervention(mask, jnp.zeros(w))})
    assert not np.allclose(np.asarray(out), np.asarray(base)), site


def test_mean_ablation_and_patching_values():
  cfg, model = build()
  toks = tokens()
  _, cache = model.run_with_cache(toks, ["1.mlp.post_act"])
  mean = cache["1.mlp.post_act"].mean(axis=(0, 1))
  iv = {"1.mlp.post_act": sites.Intervention(jnp.zeros(cfg.mlp_dim), mean)}
  _, ablated = model.run_with_cache(toks, ["1.mlp.post_act"], interventions=iv)
  np.testing.assert_allclose(np.asarray(ablated["1.mlp.post_act"]),
                             np.broadcast_to(np.asarray(mean), (2, 16, cfg.mlp_dim)), atol=1e-6)
  # Patching the whole residual stream from another input reproduces that input's logits.
  other = tokens(seed=5)
  _, src = model.run_with_cache(other, ["final_resid"])
  patched = model(toks, interventions={"final_resid": sites.Intervention(0.0, src["final_resid"])})
  table = np.asarray(model.bigram_table[...])
  expected = np.asarray(model(other)) - table[np.asarray(other)] + table[np.asarray(toks)]
  np.testing.assert_allclose(np.asarray(patched), expected, atol=1e-5)


def test_vmap_over_masks_matches_separate_calls():
  cfg, model = build()
  toks = tokens()
  graphdef, state = nnx.split(model)
  masks = jax.random.bernoulli(jax.random.key(3), 0.5, (5, cfg.mlp_dim)).astype(jnp.float32)

  @jax.jit
  def run(state, mask):
    m = nnx.merge(graphdef, state)
    return m(toks, interventions={"0.mlp.post_act": sites.Intervention(mask, 0.0)})

  batched = jax.vmap(run, in_axes=(None, 0))(state, masks)
  for i in range(5):
    np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(run(state, masks[i])),
                               atol=1e-5)
  assert not np.allclose(np.asarray(batched[0]), np.asarray(batched[1]))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_scored_positions_match_the_full_pass(variant):
  """With positions_B the last block runs at the scored positions only; logits (and their
  gradients wrt per-node masks) equal the full pass taken at those positions."""
  cfg, model = build(**VARIANTS[variant])
  toks = tokens(shape=(4, 16))
  pos = jnp.array([15, 0, 7, 3])
  w = sites.site_width(cfg, "1.mlp.post_act")
  value = jnp.linspace(-1.0, 1.0, w)

  def logits(mask, positions):
    iv = {"1.mlp.post_act": sites.Intervention(mask, value),
          "1.attn.q": sites.Intervention(jnp.ones(cfg.attn_dim).at[2].set(0.0), 0.3),
          "0.attn.resid_delta": sites.Intervention(jnp.ones(cfg.d_model).at[1].set(0.0), -0.2)}
    if positions is None:
      return jnp.take_along_axis(model(toks, interventions=iv), pos[:, None, None], axis=1)[:, 0]
    return model(toks, interventions=iv, positions_B=positions)

  mask = jnp.ones(w).at[::3].set(0.0)
  full, trimmed = logits(mask, None), logits(mask, pos)
  assert trimmed.shape == (4, cfg.vocab_size)
  np.testing.assert_allclose(np.asarray(trimmed), np.asarray(full), rtol=1e-5, atol=1e-5)
  probe = lambda positions: jax.grad(lambda m: logits(m, positions)[:, 5].sum())(mask)
  np.testing.assert_allclose(np.asarray(probe(pos)), np.asarray(probe(None)), rtol=1e-4,
                             atol=1e-6)


@pytest.mark.parametrize("variant", ["paper", "catpos", "abstopk_sink"])
def test_partial_forward_composes_to_the_full_pass(variant):
  cfg, model = build(**VARIANTS[variant])
  toks = tokens()
  iv = {"1.resid_in": sites.Intervention(jnp.ones(cfg.d_model).at[3].set(0.0), 0.5)}
  full = np.asarray(model(toks, interventions=iv))
  for s in range(model.num_sublayers + 1):
    resid = model.resid_before(toks, s, interventions=iv)
    assert resid.shape == (2, 16, cfg.d_model)
    out = model.logits_from(resid, s, toks, interventions=iv)
    np.testing.assert_allclose(np.asarray(out), full, atol=1e-5, err_msg=f"sublayer {s}")
  with pytest.raises(ValueError, match="sublayer must be in"):
    model.resid_before(toks, model.num_sublayers + 1)


def test_remat_gives_the_same_gradients():
  cfg, model = build(afrac=0.5, afrac_loctypes="mlp_neuron")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  toks = tokens()

  def loss(params, remat):
    m = nnx.merge(graphdef, params, rest)
    m.config = m.config.replace(grad_checkpointing=remat)
    return jnp.mean(m(toks) ** 2)

  g1 = jax.grad(loss)(params, True)
  g2 = jax.grad(loss)(params, False)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)


def test_bfloat16_compute_is_close_to_float32():
  _, m32 = build()
  _, m16 = build(compute_dtype="bfloat16")
  toks = tokens()
  l32, l16 = m32(toks), m16(toks)
  assert l16.dtype == jnp.float32
  _, cache = m16.run_with_cache(toks, ["0.mlp.post_act"])
  assert cache["0.mlp.post_act"].dtype == jnp.bfloat16
  assert float(jnp.max(jnp.abs(l32 - l16))) < 0.05


def test_sequence_longer_than_block_size_is_an_error():
  cfg, model = build()
  with pytest.raises(ValueError, match="exceeds block_size 32"):
    model(tokens(shape=(1, 33)))


# ------------------------------------------------------------------ throughput options
def _loss_and_grads(cfg, toks, interventions=None, **changes):
  model = GPT(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: GPT(cfg.replace(**changes), rngs=nnx.Rngs(0))))

  def loss(params):
    m = nnx.merge(graphdef, params, rest)
    return jnp.mean(jnp.sin(m(toks, interventions=interventions)))

  return jax.jit(jax.value_and_grad(loss))(params)


def _assert_same(a, b, rtol=1e-5, atol=1e-7):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _whiles(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().as_text().count(" while(")


@pytest.mark.parametrize("policy", ["full", "dots", "qkv_abstopk", "none"])
def test_remat_policies_give_the_same_gradients(policy):
  cfg = tiny_config(afrac=0.5, afrac_loctypes=ALL_LOCTYPES, sink=True)
  toks = tokens()
  want = _loss_and_grads(cfg, toks)
  got = _loss_and_grads(cfg, toks, grad_checkpointing=True, remat_policy=policy)
  _assert_same(got, want)


def test_remat_never_recomputes_the_abstopk_selection():
  """Each AbsTopK site runs its search loop(s) once per step, with or without remat."""
  cfg = tiny_config(afrac=0.5, afrac_loctypes="attn_in,mlp_neuron", compute_dtype="bfloat16")
  model = GPT(cfg, rngs=nnx.Rngs(0))
  _, params, rest = nnx.split(model, nnx.Param, ...)
  toks = tokens()

  def grad_fn(policy):
    c = cfg.replace(grad_checkpointing=True, remat_policy=policy)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: GPT(c, rngs=nnx.Rngs(0))))
    return jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p, rest)(toks)))

  n_sites = 2 * cfg.n_layer  # bf16 rows: one search loop per site
  assert _whiles(grad_fn("none"), params) == n_sites
  for policy in ("full", "dots", "qkv_abstopk"):
    assert _whiles(grad_fn(policy), params) == n_sites, policy


@pytest.mark.parametrize("sink", [False, True])
def test_fused_attention_matches_the_einsum_reference(sink):
  cfg = tiny_config(sink=sink, attention_impl="einsum")
  model = GPT(cfg, rngs=nnx.Rngs(0))
  if sink:
    for b, blk in enumerate(model.blocks):
      blk.attn.sink_logit[...] = jnp.array([0.5, -1.0, 2.0, 0.0]) * (b + 1)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  fused = nnx.graphdef(nnx.eval_shape(lambda: GPT(cfg.replace(attention_impl="xla"),
                                                  rngs=nnx.Rngs(0))))
  toks = tokens()

  def loss(params, g):
    return jnp.mean(jnp.sin(nnx.merge(g, params, rest)(toks)))

  want = jax.value_and_grad(loss)(params, graphdef)
  got = jax.value_and_grad(loss)(params, fused)
  _assert_same(got, want, rtol=1e-4, atol=1e-6)
  if sink:  # the sink logits get their gradient through the fused kernel
    assert np.abs(np.asarray(got[1]["blocks"][0]["attn"]["sink_logit"])).max() > 1e-6


def test_auto_settings_resolve_by_backend_on_cpu():
  from sparsejax.model import gpt
  cfg = tiny_config()
  assert cfg.compute_dtype == "auto" and GPT(cfg, rngs=nnx.Rngs(0)).compute_dtype == jnp.float32
  assert gpt.resolve_attention(cfg, jnp.bfloat16) == "einsum"
  assert gpt.resolve_attention(cfg.replace(attention_impl="xla"), jnp.bfloat16) == "xla"


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_layers_match_the_python_loop(remat):
  cfg = tiny_config(n_layer=3, afrac=0.5, afrac_loctypes="attn_q,mlp_neuron", sink=True,
                    grad_checkpointing=remat)
  toks = tokens()
  # Interventions at every layer (as pruning does): stacked into the scan.
  every = {f"{l}.mlp.post_act": sites.Intervention(jnp.ones(cfg.mlp_dim).at[l::5].set(0.0), 0.1)
           for l in range(3)}
  every["1.attn.q"] = sites.Intervention(jnp.ones(cfg.attn_dim).at[3].set(0.0), -0.5)
  for ivs in (None, every):
    want = _loss_and_grads(cfg, toks, ivs, scan_layers=False)
    got = _loss_and_grads(cfg, toks, ivs, scan_layers=True)
    _assert_same(got, want)


def test_scanned_layers_keep_the_public_forward_api():
  cfg, model = build(n_layer=3, d_pos_emb=8, scan_layers=True)
  _, ref = build(n_layer=3, d_pos_emb=8, scan_layers=False)
  toks = tokens(shape=(4, 16))
  pos = jnp.array([15, 0, 7, 3])
  iv = {"2.mlp.post_act": sites.Intervention(jnp.ones(cfg.mlp_dim).at[::3].set(0.0), 0.2)}
  np.testing.assert_allclose(np.asarray(model(toks, interventions=iv, positions_B=pos)),
                             np.asarray(ref(toks, interventions=iv, positions_B=pos)), atol=1e-5)
  for s in (0, 1, 3, 6):
    resid = model.resid_before(toks, s, interventions=iv)
    np.testing.assert_allclose(np.asarray(resid), np.asarray(ref.resid_before(toks, s, interventions=iv)),
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.logits_from(resid, s, toks, interventions=iv)),
                               np.asarray(ref(toks, interventions=iv)), atol=1e-5)
  names = ["1.attn.q", "2.resid_mid"]
  _, cache = model.run_with_cache(toks, names)
  _, want = ref.run_with_cache(toks, names)
  for n in names:
    np.testing.assert_allclose(np.asarray(cache[n]), np.asarray(want[n]), atol=1e-6)


def test_with_config_changes_only_the_settings():
  from sparsejax.model.gpt import merge, with_config
  cfg, model = build(grad_checkpointing=True, afrac=0.5, afrac_loctypes="mlp_neuron")
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  plain = with_config(graphdef, params, rest, grad_checkpointing=False)
  m = merge(plain, params, rest)
  assert m.config.grad_checkpointing is False and m.config.afrac == 0.5
  np.testing.assert_array_equal(np.asarray(m(tokens())), np.asarray(model(tokens())))


def test_auto_attention_falls_back_when_cudnn_refuses(monkeypatch):
  """On CPU cuDNN refuses while tracing: "auto" (as if it had picked cuDNN) falls back to the
  einsum, an explicit "cudnn" reports the refusal."""
  from sparsejax.model import gpt
  cfg, model = build()
  want = np.asarray(model(tokens()))
  monkeypatch.setattr(gpt, "resolve_attention", lambda cfg, dtype: "cudnn")
  np.testing.assert_array_equal(np.asarray(model(tokens())), want)
  _, explicit = build(attention_impl="cudnn")
  with pytest.raises(RuntimeError, match="cuDNN"):
    explicit(tokens())
