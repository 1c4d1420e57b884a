"""The HTML viewer: data escaping, page content, and a real headless-Chromium check."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sparsejax.circuits import viewer

ROOT = Path(__file__).resolve().parents[1]
EVIL = '<script>window.__xss=1</script>'


def synthetic_site(out_dir: Path) -> dict:
  """Two circuits and their details, with an injected script as a token of a context."""
  nodes = {"0.attn.act_in": [1, 4], "0.attn.q": [2], "0.attn.v": [3], "0.attn.resid_delta": [5],
           "1.mlp.act_in": [5], "1.mlp.post_act": [7, 9], "1.mlp.resid_delta": [0]}
  edges = [("0.attn.act_in", 1, "0.attn.q", 2, 0.5), ("0.attn.act_in", 4, "0.attn.v", 3, -0.2),
           ("0.attn.v", 3, "0.attn.resid_delta", 5, 0.9), ("1.mlp.act_in", 5, "1.mlp.post_act",
                                                           7, -1.1),
           ("1.mlp.post_act", 7, "1.mlp.resid_delta", 0, 0.3)]
  # Edge-pruned: the last edge is not essential (and its neuron 1.mlp.post_act[7] keeps another).
  circuit = {"schema": "sparsejax.circuit/v2", "task": "var_swap",
             "counts": {"nodes": 9, "edges": 5, "essential_edges": 4, "essential_nodes": 7},
             "nodes": nodes, "edges": [{"src": a, "src_index": i, "dst": b, "dst_index": j,
                                        "weight": w, "essential": k < 4}
                                       for k, (a, i, b, j, w) in enumerate(edges)],
             "residual_links": [], "info": {},
             "metrics": {"loss": 0.12, "loss_calibrated": 0.05, "full_model_loss": 0.02,
                         "inverse_loss": 1.3, "random_circuit_loss_mean": 0.9,
                         "target_loss": 0.15,
                         "pruning_curve": [[0, 0.7], [9, 0.12], [4224, 0.02]],
                         "control": {"loss_train": 0.6, "loss_test": 0.7, "solves_train": False,
                                     "solves_test": False, "nodes": 9},
                         "essential": {"loss": 0.14, "inverse_loss": 1.1,
                                       "random_circuit_loss_mean": 0.8}}}
  contexts = [[["a", ",", " b", " =", " b", ","], ["b", ",", " a", " =", EVIL, ","]]]
  details = {"nodes": {f"{s}[{i}]": {"site": s, "index": i, "mean_a": 0.5, "std_a": 0.1,
                                     "mean_b": -0.2, "std_b": 0.3, "mean_abs": 0.4,
                                     "ablation_delta": 0.25,
                                     "ablation_exact": True,
                                     "top": [{"pair": 0, "side": "B", "value": 2.0}]}
                       for s, ids in nodes.items() for i in ids},
             "contexts": contexts, "base_loss": 0.12, "completions": [[" a", " b"]]}
  summary = {"tasks": {"var_swap": {"nodes": 9, "edges": 5, "essential_edges": 4,
                                    "essential": {"loss": 0.14},
                                    "loss": 0.12, "loss_calibrated": 0.05,
                                    "full_model_loss": 0.02, "inverse_loss": 1.3,
                                    "random_circuit_loss_mean": 0.9,
                                    "control": circuit["metrics"]["control"]}},
             "unsolved": {"with_open": {"full_model_loss_test": 0.69,
                                        "full_model_loss_val": 0.7}},
             "geometric_mean_edges": 5.0, "geometric_mean_essential_edges": 4.0,
             "config": {"target_loss": 0.15}}
  metrics = [{"step": s, "loss": 3.0 / s, "eval_loss": 3.2 / s} for s in (1, 10, 50, 100)]
  big, wide = big_circuit(), wide_circuit()
  summary["tasks"]["big"] = dict(summary["tasks"]["var_swap"], nodes=big["counts"]["nodes"])
  summary["tasks"]["wide"] = dict(summary["tasks"]["var_swap"], nodes=wide["counts"]["nodes"])
  index = viewer.write_site(str(out_dir), summary, {"var_swap": circuit, "big": big,
                                                     "wide": wide},
                            {"var_swap": details}, {"var_swap": f"swap {EVIL} test"}, metrics,
                            f"run {EVIL}", head_dim=HEAD_DIM)
  return {"index": index, "circuit": circuit, "big": index}


def big_circuit(n_edges: int = 100) -> dict:
  """A 2-layer circuit with exactly ``n_edges`` essential edges across all four edge kinds."""
  rng = np.random.default_rng(0)
  nodes = {"0.attn.act_in": list(range(0, 40, 3)), "0.attn.q": [1, 5, 9], "0.attn.k": [2, 7],
           "0.attn.v": [3, 4, 11, 12], "0.attn.resid_delta": [5, 17, 33],
           "1.mlp.act_in": [5, 17, 33, 40], "1.mlp.post_act": list(range(0, 120, 9)),
           "1.mlp.resid_delta": [1, 2, 3, 8]}
  pairs = [("0.attn.act_in", d) for d in ("0.attn.q", "0.attn.k", "0.attn.v")] + [
      ("0.attn.v", "0.attn.resid_delta"), ("1.mlp.act_in", "1.mlp.post_act"),
      ("1.mlp.post_act", "1.mlp.resid_delta")]
  every = [(a, i, b, j) for a, b in pairs for i in nodes[a] for j in nodes[b]]
  chosen = [every[k] for k in rng.choice(len(every), n_edges, replace=False)]
  edges = [{"src": a, "src_index": i, "dst": b, "dst_index": j,
            "weight": float(rng.normal()), "essential": True} for a, i, b, j in chosen]
  links = [{"src": "0.attn.resid_delta", "dst": "1.mlp.act_in", "index": c} for c in (5, 17, 33)]
  return {"schema": "sparsejax.circuit/v2", "task": "big",
          "counts": {"nodes": sum(map(len, nodes.values())), "edges": n_edges,
                     "essential_edges": n_edges,
                     "essential_nodes": len({(e[a], e[f"{a}_index"]) for e in edges
                                             for a in ("src", "dst")})},
          "nodes": nodes, "edges": edges, "residual_links": links, "info": {},
          "metrics": {"loss": 0.1, "full_model_loss": 0.01, "inverse_loss": 1.0,
                      "target_loss": 0.15, "essential": {"loss": 0.1}}}


def wide_circuit(n_layer: int = 3) -> dict:
  """Nodes at every site of ``n_layer`` layers (8 × n_layer columns), channel indices up to 4
  digits, edges of every kind inside each layer, residual links between layers."""
  rng = np.random.default_rng(1)
  sites = ("attn.act_in", "attn.q", "attn.k", "attn.v", "attn.resid_delta", "mlp.act_in",
           "mlp.post_act", "mlp.resid_delta")
  nodes = {f"{l}.{s}": sorted(rng.choice(1024 if s == "mlp.post_act" else 64, 4,
                                         replace=False).tolist())
           for l in range(n_layer) for s in sites}
  for l in range(n_layer):  # the channels the residual links connect
    nodes[f"{l}.attn.resid_delta"] = [5, 17, 33, 40]
    nodes[f"{l}.mlp.act_in"] = [5, 17, 33, 41]
  kinds = [("attn.act_in", "attn.q"), ("attn.act_in", "attn.k"), ("attn.act_in", "attn.v"),
           ("attn.v", "attn.resid_delta"), ("mlp.act_in", "mlp.post_act"),
           ("mlp.post_act", "mlp.resid_delta")]
  edges = [{"src": f"{l}.{a}", "src_index": i, "dst": f"{l}.{b}", "dst_index": j,
            "weight": float(rng.normal()), "essential": True}
           for l in range(n_layer) for a, b in kinds
           for i, j in zip(nodes[f"{l}.{a}"], nodes[f"{l}.{b}"][::-1])]  # crossing: reordered
  links = [{"src": f"{l}.attn.resid_delta", "dst": f"{l2}.mlp.act_in", "index": c}
           for l in range(n_layer) for l2 in range(l, n_layer) for c in (5, 17, 33)]
  return {"schema": "sparsejax.circuit/v2", "task": "wide",
          "counts": {"nodes": sum(map(len, nodes.values())), "edges": len(edges),
                     "essential_edges": len(edges), "essential_nodes": 0},
          "nodes": nodes, "edges": edges, "residual_links": links, "info": {},
          "metrics": {"loss": 0.1, "full_model_loss": 0.01, "inverse_loss": 1.0,
                      "target_loss": 0.15, "essential": {"loss": 0.1}}}


HEAD_DIM = 4


def test_tick_labels_are_short_and_inside_the_plot():
  """4224 is written 4,224 (not 4.22e+03) and the last x tick ends inside the frame."""
  assert [viewer.tick_label(v) for v in (4224, 65, 0.347, 0.0021, 0, 2e7)] == [
      "4,224", "65", "0.347", "0.0021", "0", "2.00e+07"]
  svg = viewer.svg_line_plot([("loss", "#000", [(1, 0.7), (65, 0.2), (4224, 0.01)])],
                             width=560, log_x=True)
  ticks = [t for t in svg.split("<text ")[1:] if 'class="tick"' in t]
  last = ticks[-1]
  assert ">4,224<" in last and 'text-anchor="end"' in last
  assert float(last.split('x="')[1].split('"')[0]) <= 560


def test_contexts_rank_by_distance_from_the_mean():
  """A node that is mostly negative is largest where it is most negative, not at its signed
  maximum."""
  from sparsejax.circuits.analysis import largest_deviations
  values = np.array([-3.0, 0.1, 0.2, -1.0, -0.5])
  assert largest_deviations(values, 0.0, 3).tolist() == [0, 3, 4]
  assert largest_deviations(values, -1.0, 2).tolist() == [0, 2]


def test_pages_escape_everything_from_tokens(tmp_path):
  site = synthetic_site(tmp_path)
  page = (tmp_path / "task_var_swap.html").read_text()
  index = Path(site["index"]).read_text()
  assert EVIL not in page and EVIL not in index
  assert page.count("<script") == 2  # the data block and the page's own code
  assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in index
  data = json.loads(page.split('id="circuit-data">')[1].split("</script>")[0])
  assert data["details"]["contexts"][0][1][4] == EVIL  # intact after decoding
  assert len(data["nodes"]) == 9 and len(data["edges"]) == 5
  assert sum(e["essential"] for e in data["edges"]) == 4
  # Nodes no essential edge touches are drawn only with every edge.
  assert {n["id"] for n in data["nodes"] if not n["essential"]} == {"1.mlp.resid_delta[0]",
                                                                   "1.mlp.post_act[9]"}


def _chromium():
  for exe in ("chromium", "chromium-browser", "google-chrome"):
    if shutil.which(exe):
      return shutil.which(exe)
  return None


@pytest.mark.skipif(not (_chromium() and shutil.which("chromedriver")),
                    reason="headless Chromium + chromedriver not installed (.ci/run installs them)")
def test_pages_in_headless_chromium(tmp_path):
  webdriver = pytest.importorskip("selenium.webdriver")
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  site = synthetic_site(tmp_path / "site")
  opts = webdriver.ChromeOptions()
  opts.binary_location = _chromium()
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
    opts.add_argument(arg)
  opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
  artifacts = Path(os.environ.get("SPARSEJAX_TEST_ARTIFACTS", ROOT / "test-artifacts"))
  artifacts.mkdir(parents=True, exist_ok=True)
  try:
    driver.get(Path(site["index"]).as_uri())
    assert "var_swap" in driver.find_element(By.TAG_NAME, "table").text
    driver.find_element(By.LINK_TEXT, "var_swap").click()
    count = lambda css: len(driver.find_elements(By.CSS_SELECTOR, css))
    # Essential edges by default: 4 edges and the 7 nodes they touch...
    assert (count("circle.node"), count("path.edge")) == (7, 4)
    assert "7 nodes, 4 essential edges, 0 residual links drawn" in driver.find_element(
        By.ID, "count").text
    # Every tick label of the plots lies inside its plot (4,224 is not cut at the edge).
    outside = driver.execute_script(
        "return [...document.querySelectorAll('svg.plot text.tick')].filter(t => {"
        "const b = t.getBoundingClientRect(), p = t.ownerSVGElement.getBoundingClientRect();"
        "return b.left < p.left || b.right > p.right; }).map(t => t.textContent);")
    assert not outside, outside
    assert "4,224" in driver.find_element(By.CSS_SELECTOR, "svg.plot").text
    # ...every edge on demand.
    driver.find_element(By.ID, "all-edges").click()
    assert (count("circle.node"), count("path.edge")) == (9, 5)
    node = driver.find_element(By.CSS_SELECTOR, 'circle.node[data-id="1.mlp.post_act[7]"]')
    node.click()
    panel = driver.find_element(By.ID, "panel").text
    assert "1.mlp.post_act[7]" in panel and "0.5000 ± 0.1000" in panel
    assert "+0.2500" in panel and "Where it is largest: furthest from its mean" in panel
    assert EVIL in panel  # the token is shown as text...
    assert driver.execute_script("return window.__xss === undefined")  # ...and never ran
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 2
    assert count("path.edge.hot") == 2  # the clicked neuron's input and output edges
    driver.execute_script("document.getElementById('layout').scrollIntoView()")
    driver.save_screenshot(str(artifacts / "viewer_task_page.png"))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    # A 100-edge circuit stays readable: no two labels overlap, no two nodes coincide.
    driver.get((Path(site["big"]).parent / "task_big.html").as_uri())
    assert count("path.edge") == 100
    assert not _overlaps(driver)
    driver.execute_script("document.getElementById('layout').scrollIntoView()")
    driver.save_screenshot(str(artifacts / "viewer_100_edges.png"))
    # 24 columns (3 layers × 8 sites) fit the frame without scrolling; residual links between
    # layers are drawn; q / k / v nodes are grouped by head, one band per head.
    driver.get((Path(site["big"]).parent / "task_wide.html").as_uri())
    wide = wide_circuit()
    assert driver.execute_script("const w = document.getElementById('graph-wrap');"
                                 "return w.scrollWidth <= w.clientWidth;")
    assert count("text.col") == 24 and count("text.layer") == 3
    assert count("path.link") == len(wide["residual_links"]) == 18
    assert not _overlaps(driver)
    columns = driver.execute_script(
        "const out = {}; for (const c of document.querySelectorAll('circle.node')) {"
        "const id = c.dataset.id, site = id.split('[')[0];"
        "(out[site] = out[site] || []).push([+c.getAttribute('cy'), +id.split('[')[1].slice(0, -1)]);"
        "} return out;")
    groups = 0
    for site, rows in columns.items():
      if site.split(".", 1)[1] in ("attn.q", "attn.k", "attn.v"):
        heads = [index // HEAD_DIM for _, index in sorted(rows)]
        assert heads == sorted(heads), (site, heads)  # top to bottom, head by head
        groups += len(set(heads))
    assert count("rect.head") == groups > 9
    driver.execute_script("document.getElementById('layout').scrollIntoView()")
    driver.save_screenshot(str(artifacts / "viewer_wide.png"))
  finally:
    driver.quit()


def _overlaps(driver) -> list:
  """Pairs of labels (or of nodes) whose boxes on the screen overlap."""
  boxes = driver.execute_script(
      "return [...document.querySelectorAll('text.label, text.col, text.layer, text.head, "
      "circle.node')].map(e => { const b = e.getBoundingClientRect();"
      "return [e.tagName, b.left, b.top, b.width, b.height, e.textContent]; });")
  return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
          if a[0] == b[0] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
          and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]][:3]


def test_build_viewer_on_a_trained_run(tmp_path):
  """The real path: node details from a trained model, for a circuit file written by hand."""
  from sparsejax.circuits import prune
  from sparsejax.circuits.graph import Circuit, find_edges
  from sparsejax.pipeline import build_viewer
  from sparsejax.train.runs import load_run
  from conftest import train_tiny_bpe_run
  work = tmp_path / "run"
  train_tiny_bpe_run(work, steps=3)
  run = load_run(str(work))
  pcfg = prune.PruneConfig(test_pairs=8, val_pairs=8, train_pairs=8, mean_tokens=1024)
  nodes = {"0.mlp.act_in": [0, 3], "0.mlp.post_act": [1, 2, 5], "0.mlp.resid_delta": [4]}
  edges, links = find_edges(nodes, run.params, run.config.model)
  circuit = Circuit("var_swap", nodes, edges, links,
                    {"loss": 0.5, "full_model_loss": 0.6, "inverse_loss": 0.7,
                     "target_loss": 0.15, "pruning_curve": [[0, 0.69], [6, 0.5]]}, {})
  prune_dir = tmp_path / "prune"
  (prune_dir / "circuits").mkdir(parents=True)
  circuit.save(str(prune_dir / "circuits" / "var_swap.json"))
  summary = {"tasks": {"var_swap": {"nodes": 6, "edges": len(edges), "loss": 0.5,
                                    "loss_calibrated": None, "full_model_loss": 0.6,
                                    "inverse_loss": 0.7, "random_circuit_loss_mean": None,
                                    "control": None}},
             "unsolved": {}, "geometric_mean_edges": float(max(len(edges), 1)),
             "config": dataclasses.asdict(pcfg)}
  (prune_dir / "summary.json").write_text(json.dumps(summary))
  index = build_viewer(str(work), str(prune_dir), progress=lambda _: None)
  page = (Path(index).parent / "task_var_swap.html").read_text()
  data = json.loads(page.split('id="circuit-data">')[1].split("</script>")[0])
  assert set(data["details"]["nodes"]) == {f"{s}[{i}]" for s, ids in nodes.items() for i in ids}
  assert len(data["details"]["contexts"]) == 8
  assert sum(d["ablation_exact"] for d in data["details"]["nodes"].values()) == 6
  assert data["head_dim"] == run.config.model.head_dim
  for d in data["details"]["nodes"].values():  # contexts furthest from the node's mean first
    dev = [abs(t["value"] - d["mean"]) for t in d["top"]]
    assert dev == sorted(dev, reverse=True) and len(dev) == 5
