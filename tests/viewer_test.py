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
                         "target_loss": 0.15, "pruning_curve": [[0, 0.7], [9, 0.12], [100, 0.02]],
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
  big = big_circuit()
  summary["tasks"]["big"] = dict(summary["tasks"]["var_swap"], nodes=big["counts"]["nodes"])
  index = viewer.write_site(str(out_dir), summary, {"var_swap": circuit, "big": big},
                            {"var_swap": details}, {"var_swap": f"swap {EVIL} test"}, metrics,
                            f"run {EVIL}")
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
    assert "7 nodes, 4 essential edges drawn" in driver.find_element(By.ID, "count").text
    # ...every edge on demand.
    driver.find_element(By.ID, "all-edges").click()
    assert (count("circle.node"), count("path.edge")) == (9, 5)
    node = driver.find_element(By.CSS_SELECTOR, 'circle.node[data-id="1.mlp.post_act[7]"]')
    node.click()
    panel = driver.find_element(By.ID, "panel").text
    assert "1.mlp.post_act[7]" in panel and "0.5000 ± 0.1000" in panel
    assert "+0.2500" in panel and "Where it is largest" in panel
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
    boxes = driver.execute_script(
        "return [...document.querySelectorAll('text.label, text.col, circle.node')].map(e => {"
        "const b = e.getBBox(); return [e.tagName, b.x, b.y, b.width, b.height]; });")
    overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if a[0] == b[0] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
                and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]]
    assert not overlaps, overlaps[:3]
    driver.execute_script("document.getElementById('layout').scrollIntoView()")
    driver.save_screenshot(str(artifacts / "viewer_100_edges.png"))
  finally:
    driver.quit()


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
