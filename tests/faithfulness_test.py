"""The faithfulness suite: each check on a hand-built model where its answer is known."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from planted import CFG, EXPECTED, hand_built_model, synthetic_task
from sparsejax.circuits import faithfulness
from sparsejax.circuits.calibration import numpy_loss
from sparsejax.circuits.evaluate import CircuitModel
from sparsejax.circuits.graph import Circuit
from sparsejax.circuits.masks import NodeLayout
from sparsejax.model.gpt import GPT

SETTINGS = faithfulness.Settings(target_loss=0.15, repurposed_below=0.5,
                                 attention_diverges_above=0.1)


def circuit_model(graphdef, params, buffers, cfg, values=None):
  layout = NodeLayout.for_model(cfg)
  values = np.zeros(layout.n_nodes, np.float32) if values is None else values
  return CircuitModel(graphdef, params, buffers, cfg, values)


def suite(model, masks, data, losses=None):
  tests = {n: data for n in masks}
  if losses is None:  # the circuit's loss as searched: every norm live
    q = model.margins_queue()
    t = {n: q.add(data, m, None) for n, m in masks.items()}
    res = q.run()
    losses = {n: numpy_loss(res[i]) for n, i in t.items()}
  return faithfulness.evaluate_circuits(model, masks, tests, {}, SETTINGS, losses), losses


# ------------------------------------------------------------------ frozen norms
@pytest.mark.parametrize("rms_norm", [True, False])
def test_frozen_norms_are_the_models_own_and_change_logits_when_different(rms_norm):
  cfg = tiny_config(rms_norm=rms_norm, ln_bias=not rms_norm)
  model = GPT(cfg, rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (3, 12)))
  norms = model.norm_scales(tokens)
  assert set(norms) == {"0.ln_1", "0.ln_2", "1.ln_1", "1.ln_2", "ln_f"}
  assert all(v.shape == (3, 12) for v in norms.values())
  pos = jnp.asarray([3, 11, 6])
  for kw in ({}, {"positions_B": pos}):  # the trimmed last block selects the frozen values too
    np.testing.assert_allclose(model(tokens, frozen_norms=norms, **kw), model(tokens, **kw),
                               atol=1e-5)
  for name in norms:  # each norm is used: doubling one normaliser changes the logits
    changed = dict(norms, **{name: 2 * norms[name]})
    assert np.abs(model(tokens, frozen_norms=changed) - model(tokens)).max() > 1e-3, name


D = 8
SHRINK_CFG = dataclasses.replace(CFG, n_layer=2)


def shrink_model(writer: float = 20.0, gain: float = 113.0):
  """Layer 0's MLP neuron 7 reads the constant channel 2 and writes ``writer`` × it to channel 1,
  which nothing reads: it only makes the residual stream large. Layer 1's neurons 3 and 5 read
  +channel 0 (token 1: +1, token 2: −1), 4 and 6 read −channel 0 (ReLU), and write ±``gain`` to
  channel 5, which the unembedding reads (+ token 6, − token 7): two redundant copies of the
  answer. Attention is zero.

  Ablating neuron 7 (zero ablation) shrinks layer 1's ln_2 normaliser from ≈ 14 to 0.5, so the
  surviving neurons' outputs grow ≈ 28-fold: a circuit with one copy of the answer and without
  neuron 7 beats the full model with live norms, but with the full model's normalisers it has
  half the full model's margin and misses the target."""
  model = GPT(SHRINK_CFG, rngs=nnx.Rngs(0))
  graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
  params = jax.tree.map(jnp.zeros_like, nnx.to_pure_dict(params))
  for blk in params["blocks"].values():
    for norm in ("ln_1", "ln_2"):
      blk[norm]["scale"] = jnp.ones(D)
  params["ln_f"]["scale"] = jnp.ones(D)
  wte = np.zeros((8, D), np.float32)
  wte[:, 2] = 1.0
  wte[1, 0], wte[2, 0], wte[3, 3], wte[4, 4] = 1, -1, 1, 1
  params["wte"] = jnp.asarray(wte)
  fc0, proj0 = np.zeros((D, 8), np.float32), np.zeros((8, D), np.float32)
  fc0[2, 7], proj0[7, 1] = 1.0, writer
  fc1, proj1 = np.zeros((D, 8), np.float32), np.zeros((8, D), np.float32)
  for neuron, sign in ((3, 1), (5, 1), (4, -1), (6, -1)):
    fc1[0, neuron], proj1[neuron, 5] = sign, sign * gain
  for layer, (fc, proj) in enumerate(((fc0, proj0), (fc1, proj1))):
    params["blocks"][layer]["mlp"]["c_fc"]["kernel"] = jnp.asarray(fc)
    params["blocks"][layer]["mlp"]["c_proj"]["kernel"] = jnp.asarray(proj)
  params["lm_head"]["kernel"] = jnp.zeros((D, 8)).at[5, 6].set(1.0).at[5, 7].set(-1.0)
  return graphdef, params, nnx.to_pure_dict(buffers)


WRITER = {"0.mlp.act_in": [2], "0.mlp.post_act": [7], "0.mlp.resid_delta": [1]}
ONE_COPY = {"1.mlp.act_in": [0], "1.mlp.post_act": [3, 4], "1.mlp.resid_delta": [5]}
BOTH_COPIES = {"1.mlp.act_in": [0], "1.mlp.post_act": [3, 4, 5, 6], "1.mlp.resid_delta": [5]}


def test_a_circuit_that_wins_by_shrinking_the_residual_stream_is_caught():
  layout = NodeLayout.for_model(SHRINK_CFG)
  model = circuit_model(*shrink_model(), SHRINK_CFG)
  data = synthetic_task(32, 0)
  masks = {"shrinks": layout.mask_of(ONE_COPY),  # half the answer, and the stream shrunk
           "shrinks_only": layout.mask_of(BOTH_COPIES),  # the whole answer, the stream shrunk
           "honest": layout.mask_of(BOTH_COPIES | WRITER),  # the whole model's computation
           "full": np.ones(layout.n_nodes, np.float32)}
  res, live = suite(model, masks, data)
  full = live["full"]
  assert full <= SETTINGS.target_loss
  # With live norms the shrinking circuit is better than the full model, and smaller than the
  # honest circuit: a search would pick it.
  assert live["shrinks"] < 0.1 * full and live["shrinks"] < live["honest"]
  # With the full model's normalisers it misses the target; it is flagged.
  assert res["shrinks"]["loss_frozen_norms"] > SETTINGS.target_loss
  assert {"fails_frozen_norms", "shrinks_stream"} <= set(res["shrinks"]["flags"])
  assert res["shrinks"]["norm_ratio"]["1.ln_2"] < 0.05  # 0.5 / 14: the stream shrank
  # The whole answer with the stream shrunk: the frozen loss is the full model's, still at the
  # target, but the shrinking is reported.
  assert res["shrinks_only"]["loss_frozen_norms"] == pytest.approx(full, rel=1e-4)
  assert "shrinks_stream" in res["shrinks_only"]["flags"]
  assert "fails_frozen_norms" not in res["shrinks_only"]["flags"]
  for name in ("honest", "full"):  # the model's own computation: nothing to flag
    assert res[name]["loss_frozen_norms"] == pytest.approx(full, rel=1e-4)
    assert res[name]["norm_ratio"]["1.ln_2"] == pytest.approx(1.0, rel=1e-5)
    assert not {"fails_frozen_norms", "shrinks_stream"} & set(res[name]["flags"])


# ------------------------------------------------------------------ trivially solvable
def bigram_model():
  """The planted model with a bigram table that answers the task from the last token alone."""
  cfg = dataclasses.replace(CFG, enable_bigram_table=True, learnable_bigram_table=True)
  graphdef, params, buffers = hand_built_model()
  model = GPT(cfg, rngs=nnx.Rngs(0))
  graphdef, fresh, _ = nnx.split(model, nnx.Param, ...)
  params = dict(params)
  table = np.zeros((8, 8), np.float32)
  table[1, 6], table[1, 7], table[2, 7], table[2, 6] = 4.0, -4.0, 4.0, -4.0
  params["bigram_table"] = jnp.asarray(table)
  assert set(nnx.to_pure_dict(fresh)) == set(params)
  return graphdef, params, buffers, cfg


def test_a_task_the_bigram_table_solves_is_flagged_and_left_out_of_the_headline():
  graphdef, params, buffers, cfg = bigram_model()
  layout = NodeLayout.for_model(cfg)
  mask = layout.mask_of(EXPECTED)
  data = synthetic_task(32, 0)
  res, _ = suite(circuit_model(graphdef, params, buffers, cfg), {"bigram": mask}, data)
  assert res["bigram"]["zero_nodes_loss"] < 0.01
  assert res["bigram"]["trivially_solvable"] and "trivially_solvable" in res["bigram"]["flags"]
  # The same task on the model without the table needs its four nodes: not flagged.
  plain, _ = suite(circuit_model(*hand_built_model(), CFG), {"plain": mask}, data)
  assert plain["plain"]["zero_nodes_loss"] == pytest.approx(np.log(2), abs=1e-3)
  assert not plain["plain"]["trivially_solvable"] and not plain["plain"]["flags"]
  # The headline geometric means leave the trivial task out; the all-circuit ones are kept.
  circuits = {"bigram": Circuit("bigram", {"0.mlp.act_in": [0]}, [{}] * 1000,
                                metrics={"faithfulness": res["bigram"], "loss": 0.0}),
              "plain": Circuit("plain", EXPECTED, [{}] * 4,
                               metrics={"faithfulness": plain["plain"], "loss": 0.1})}
  summary = {"geometric_mean_edges": np.sqrt(4000), "geometric_mean_nodes": 2.0,
             "tasks": {n: {"loss": c.metrics["loss"]} for n, c in circuits.items()}}
  faithfulness.summary_rows(summary, circuits)
  assert summary["geometric_mean_edges"] == pytest.approx(4.0)
  assert summary["geometric_mean_edges_all_circuits"] == pytest.approx(np.sqrt(4000))
  assert summary["headline_excludes"] == ["bigram"]
  assert summary["tasks"]["bigram"]["faithfulness"]["flags"] == ["trivially_solvable"]
  assert "trivially solvable" in faithfulness.format_table(summary)


# ------------------------------------------------------------------ node repurposing
def test_a_kept_node_whose_input_was_ablated_is_flagged_repurposed():
  graphdef, params, buffers = hand_built_model(decoys=True)
  layout = NodeLayout.for_model(CFG)
  model = circuit_model(graphdef, params, buffers, CFG)
  data = synthetic_task(32, 0)
  honest = layout.mask_of({"0.mlp.act_in": [0, 1, 2], "0.mlp.post_act": [3, 4],
                           "0.mlp.resid_delta": [5, 6]})
  # Neuron 3 kept, but its real input (channel 0) ablated: it now follows the decoy channel 1.
  moved = layout.mask_of({"0.mlp.act_in": [1, 2], "0.mlp.post_act": [3, 4],
                          "0.mlp.resid_delta": [5]})
  res, _ = suite(model, {"honest": honest, "moved": moved}, data)
  rep = res["honest"]["repurposing"]
  assert rep["repurposed"] == 0 and rep["min_correlation"] > 0.999
  rep = res["moved"]["repurposing"]
  flagged = {(n["site"], n["index"]) for n in rep["nodes"]}
  assert ("0.mlp.post_act", 3) in flagged and ("0.mlp.post_act", 4) in flagged
  assert ("0.mlp.act_in", 1) not in flagged  # its own value is untouched by the ablation
  assert rep["share_repurposed"] == pytest.approx(len(flagged) / 5)
  assert "repurposed_nodes" in res["moved"]["flags"]


def test_correlation_merges_chunks_exactly():
  rng = np.random.default_rng(0)
  x, y = rng.normal(3.0, 1.0, (2, 100, 4))
  y = y + x

  def stats(a, b):
    return np.stack([np.full(4, len(a)), a.mean(0), b.mean(0), ((a - a.mean(0)) ** 2).sum(0),
                     ((b - b.mean(0)) ** 2).sum(0), ((a - a.mean(0)) * (b - b.mean(0))).sum(0)])

  merged = None
  for i in range(0, 100, 30):
    merged = faithfulness._merge_stats(merged, stats(x[i:i + 30], y[i:i + 30]))
  np.testing.assert_allclose(merged, stats(x, y), rtol=1e-10)


# ------------------------------------------------------------------ attention
def test_attention_patterns_are_the_models_own_and_diverge_when_the_input_is_ablated():
  cfg = tiny_config(sink=True, enable_bigram_table=False)
  gpt = GPT(cfg, rngs=nnx.Rngs(1))
  graphdef, params, buffers = nnx.split(gpt, nnx.Param, ...)
  params, buffers = nnx.to_pure_dict(params), nnx.to_pure_dict(buffers)
  params["blocks"][0]["attn"]["sink_logit"] = jnp.full((cfg.n_head,), 0.5)
  for blk in params["blocks"].values():  # sharp patterns (the init's are nearly uniform)
    blk["attn"]["c_attn"]["kernel"] = 20.0 * blk["attn"]["c_attn"]["kernel"]
  gpt = nnx.merge(graphdef, params, buffers)
  # The pattern rebuilt from the recorded queries and keys gives the model's attention output.
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (3, 10)))
  last = jnp.asarray([9, 4, 7])
  _, cache = gpt.run_with_cache(tokens, ["0.attn.q", "0.attn.k", "0.attn.v", "0.attn.y"])
  p = faithfulness._pattern(gpt, 0, cache["0.attn.q"], cache["0.attn.k"], last)
  assert p.shape == (3, cfg.n_head, 11)  # 10 keys and the sink
  v = cache["0.attn.v"].reshape(3, 10, cfg.n_head, cfg.d_head)
  y = jnp.einsum("bht,bthk->bhk", p[..., :10], v).reshape(3, -1)
  np.testing.assert_allclose(y, cache["0.attn.y"][jnp.arange(3), last], atol=1e-5)
  assert float(p[..., 10].min()) > 0  # the sink takes mass
  # Everything kept: no divergence. Layer 1's heads kept, layer 1's input channels ablated (mean
  # 0 here): their patterns change; a head with nothing kept is not reported.
  layout = NodeLayout.for_model(cfg)
  model = circuit_model(graphdef, params, buffers, cfg)
  pairs = np.asarray(np.random.default_rng(1).integers(0, 64, (8, 2, 12)), np.int32)
  from sparsejax.circuits.evaluate import TaskData
  from sparsejax.tasks.batch import TaskBatch
  data = TaskData(TaskBatch(pairs, np.full((8, 2), 11, np.int32), np.ones((8, 2), np.int32),
                            np.zeros((8, 2), np.int32)))
  head_channels = list(range(cfg.d_head))  # head 0 of layer 1
  ablated = np.ones(layout.n_nodes, np.float32)
  o = layout.offsets[layout.sites.index("1.attn.act_in")]
  ablated[o:o + cfg.d_model // 2] = 0.0
  only_head0 = layout.mask_of({"1.attn.q": head_channels, "1.attn.k": head_channels})
  res, _ = suite(model, {"all": np.ones(layout.n_nodes, np.float32), "ablated": ablated,
                         "head0": only_head0}, data)
  att = res["all"]["attention"]
  assert att["kept_heads"] == 2 * cfg.n_head and att["max_js_bits"] < 1e-6
  att = res["ablated"]["attention"]
  layer1 = [h["js_bits"] for h in att["heads"] if h["layer"] == 1]
  layer0 = [h["js_bits"] for h in att["heads"] if h["layer"] == 0]
  assert max(layer0) < 1e-6 and min(layer1) > 1e-3
  assert [(h["layer"], h["head"]) for h in res["head0"]["attention"]["heads"]] == [(1, 0)]
  assert faithfulness.kept_heads(layout, only_head0, cfg.n_head) == [(1, 0)]


# ------------------------------------------------------------------ seeds and ood
def test_seed_variance_reports_sizes_and_jaccard():
  a = {("0.mlp.act_in", 0), ("0.mlp.post_act", 3)}
  b = {("0.mlp.act_in", 0), ("0.mlp.post_act", 4), ("0.mlp.post_act", 3)}
  c = {("0.mlp.act_in", 1)}
  out = faithfulness.seed_variance({0: {"t": a, "u": a}, 1: {"t": b}, 2: {"t": c}})
  assert set(out) == {"t"}  # u was pruned under one seed only
  t = out["t"]
  assert t["sizes"] == [2, 3, 1] and t["size_spread"] == pytest.approx(1.0)
  assert t["jaccard_mean"] == pytest.approx((2 / 3 + 0 + 0) / 3)
  assert t["jaccard_min"] == 0.0


def test_ood_figures_come_from_the_ood_pairs_and_flag_a_circuit_that_fails_there():
  layout = NodeLayout.for_model(CFG)
  model = circuit_model(*hand_built_model(), CFG)
  half = {k: [i for i in v if (k, i) != ("0.mlp.post_act", 4)] for k, v in EXPECTED.items()}
  masks = {"exp": layout.mask_of(EXPECTED), "half": layout.mask_of(half)}
  test = synthetic_task(16, 0, flip=True)  # the test pairs: every circuit fails them
  ood = synthetic_task(16, 1)
  res = faithfulness.evaluate_circuits(model, masks, {n: test for n in masks},
                                       {n: ood for n in masks} | {"other": "no ood pairs"},
                                       SETTINGS, {"exp": 0.1, "half": 0.1})
  q = model.margins_queue()
  for m in (np.ones(layout.n_nodes, np.float32), masks["exp"], masks["half"]):
    q.add(ood, m, None)
  full, exp, half_loss = [numpy_loss(z) for z in q.run()]
  assert full <= SETTINGS.target_loss < half_loss
  assert res["exp"]["ood"] == {"loss": pytest.approx(exp), "full_model_loss": pytest.approx(full),
                               "pairs": 16}
  assert res["half"]["ood"]["loss"] == pytest.approx(half_loss)
  assert "fails_ood" in res["half"]["flags"] and "fails_ood" not in res["exp"]["flags"]
