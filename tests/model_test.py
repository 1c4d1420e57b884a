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
