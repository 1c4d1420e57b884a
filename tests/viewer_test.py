"""The HTML viewer: data escaping, page content, and a real headless-Chromium check."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

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
  circuit = {"schema": "sparsejax.circuit/v1", "task": "var_swap",
             "counts": {"nodes": 9, "edges": 5},
             "nodes": nodes, "edges": [{"src": a, "src_index": i, "dst": b, "dst_index": j,
                                        "weight": w} for a, i, b, j, w in edges],
             "residual_links": [], "info": {},
             "metrics": {"loss": 0.12, "loss_calibrated": 0.05, "full_model_loss": 0.02,
                         "inverse_loss": 1.3, "random_circuit_loss_mean": 0.9,
                         "target_loss": 0.15, "pruning_curve": [[0, 0.7], [9, 0.12], [100, 0.02]],
                         "control": {"loss_train": 0.6, "loss_test": 0.7, "solves_train": False,
                                     "solves_test": False, "nodes": 9}}}
  contexts = [[["a", ",", " b", " =", " b", ","], ["b", ",", " a", " =", EVIL, ","]]]
  details = {"nodes": {f"{s}[{i}]": {"site": s, "index": i, "mean_a": 0.5, "std_a": 0.1,
                                     "mean_b": -0.2, "std_b": 0.3, "ablation_delta": 0.25,
                                     "ablation_exact": True,
                                     "top": [{"pair": 0, "side": "B", "value": 2.0}]}
                       for s, ids in nodes.items() for i in ids},
             "contexts": contexts, "base_loss": 0.12, "completions": [[" a", " b"]]}
  summary = {"tasks": {"var_swap": {"nodes": 9, "edges": 5, "loss": 0.12, "loss_calibrated": 0.05,
                                    "full_model_loss": 0.02, "inverse_loss": 1.3,
                                    "random_circuit_loss_mean": 0.9,
                                    "control": circuit["metrics"]["control"]}},
             "unsolved": {"with_open": {"full_model_loss_test": 0.69,
                                        "full_model_loss_val": 0.7}},
             "geometric_mean_edges": 5.0, "config": {"target_loss": 0.15}}
  metrics = [{"step": s, "loss": 3.0 / s, "eval_loss": 3.2 / s} for s in (1, 10, 50, 100)]
  index = viewer.write_site(str(out_dir), summary, {"var_swap": circuit},
                            {"var_swap": details}, {"var_swap": f"swap {EVIL} test"}, metrics,
                            f"run {EVIL}")
  return {"index": index, "circuit": circuit}


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
              "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
              "--window-size=1400,1000"):
    opts.add_argument(arg)
  opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
  try:
    driver.get(Path(site["index"]).as_uri())
    assert "var_swap" in driver.find_element(By.TAG_NAME, "table").text
    driver.find_element(By.LINK_TEXT, "var_swap").click()
    assert driver.find_elements(By.CSS_SELECTOR, "circle.node")
    n_nodes = len(driver.find_elements(By.CSS_SELECTOR, "circle.node"))
    n_edges = len(driver.find_elements(By.CSS_SELECTOR, "line.edge"))
    assert (n_nodes, n_edges) == (site["circuit"]["counts"]["nodes"],
                                  site["circuit"]["counts"]["edges"])
    node = driver.find_element(By.CSS_SELECTOR, 'circle.node[data-id="1.mlp.post_act[7]"]')
    node.click()
    panel = driver.find_element(By.ID, "panel").text
    assert "1.mlp.post_act[7]" in panel and "0.5000 ± 0.1000" in panel
    assert EVIL in panel  # the token is shown as text...
    assert driver.execute_script("return window.__xss === undefined")  # ...and never ran
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 2
    hot = driver.find_elements(By.CSS_SELECTOR, "line.edge.hot")
    assert len(hot) == 2  # the clicked neuron's input and output edges
    artifacts = Path(os.environ.get("SPARSEJAX_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(artifacts / "viewer_task_page.png"))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
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
