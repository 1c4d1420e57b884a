"""The circuit file and its exports: JSON round trip, networkx graph, the pruning presets."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

import sparsejax as sj
from sparsejax.circuits.graph import Circuit
from sparsejax.circuits.prune import PRESETS, preset

ROOT = Path(__file__).resolve().parents[1]


def hand_circuit() -> Circuit:
  """Edge-pruned: three edges, two essential; one residual link between layers."""
  nodes = {"0.attn.v": [3], "0.attn.resid_delta": [5], "1.mlp.act_in": [5],
           "1.mlp.post_act": [7, 9]}
  edges = [{"src": "0.attn.v", "src_index": 3, "dst": "0.attn.resid_delta", "dst_index": 5,
            "weight": 0.9, "essential": True},
           {"src": "1.mlp.act_in", "src_index": 5, "dst": "1.mlp.post_act", "dst_index": 7,
            "weight": -1.1, "essential": True},
           {"src": "1.mlp.act_in", "src_index": 5, "dst": "1.mlp.post_act", "dst_index": 9,
            "weight": 0.2, "essential": False}]
  links = [{"src": "0.attn.resid_delta", "dst": "1.mlp.act_in", "index": 5}]
  return Circuit("var_swap", nodes, edges, links, {"loss": 0.1}, {"edge_pruned": True})


def test_to_json_reads_back():
  c = hand_circuit()
  d = json.loads(c.to_json())
  assert d["counts"] == {"nodes": 5, "edges": 3, "essential_edges": 2, "essential_nodes": 4,
                         "nodes_by_site": {"0.attn.v": 1, "0.attn.resid_delta": 1,
                                           "1.mlp.act_in": 1, "1.mlp.post_act": 2}}
  again = Circuit.from_dict(d)
  assert again == c


def test_to_networkx():
  nx = pytest.importorskip("networkx")  # the optional extra sparsejax[networkx]
  g = hand_circuit().to_networkx()
  assert isinstance(g, nx.DiGraph) and g.graph["task"] == "var_swap"
  assert g.number_of_nodes() == 5 and g.number_of_edges() == 4  # 3 weights + 1 residual link
  assert g.nodes["1.mlp.post_act[7]"] == {"site": "1.mlp.post_act", "index": 7, "layer": 1,
                                          "essential": True}
  assert not g.nodes["1.mlp.post_act[9]"]["essential"]  # only a non-essential edge touches it
  link = g.edges["0.attn.resid_delta[5]", "1.mlp.act_in[5]"]
  assert link["kind"] == "residual" and link["essential"]
  w = g.edges["1.mlp.act_in[5]", "1.mlp.post_act[7]"]
  assert (w["kind"], w["weight"], w["essential"]) == ("weight", -1.1, True)
  # The essential circuit is a subgraph away; a path runs from layer 0 to layer 1's neuron.
  ess = g.edge_subgraph([e for e, a in g.edges.items() if a["essential"]])
  assert nx.has_path(ess, "0.attn.v[3]", "1.mlp.post_act[7]")
  assert not ess.has_node("1.mlp.post_act[9]")


def test_presets_live_in_the_library_and_the_config_file_selects_them():
  spec = importlib.util.spec_from_file_location("prune_configs",
                                                ROOT / "experiments" / "configs" / "prune.py")
  prune_configs = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(prune_configs)
  for name in PRESETS:
    assert prune_configs.get_config(name).to_dict() == dataclasses.asdict(preset(name))
  quick = preset("quick", target_loss=0.1)
  assert (quick.steps, quick.candidates, quick.target_loss) == (100, 2, 0.1)
  assert preset("paper").candidates == 256 and sj.PRUNE_PRESETS is PRESETS
  with pytest.raises(sj.ConfigError, match="unknown 'fast'"):
    preset("fast")
  with pytest.raises(sj.ConfigError, match="no field stepz"):
    preset("quick", stepz=3)
  with pytest.raises(sj.ConfigError, match="steps: must be >= 1"):
    preset("quick", steps=0)
