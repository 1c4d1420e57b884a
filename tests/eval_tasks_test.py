"""The binaries and pipeline stages that read a trained run (tiny, BPE, checkpoints at steps 2
and 4): experiments/eval_tasks.py, the checks prune.py makes before pruning, and the viewer's
reading of pruning outputs (stale files, the pruned step, hand-edited or damaged files)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fake_pruning, train_tiny_bpe_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  work = tmp_path_factory.mktemp("run")
  train_tiny_bpe_run(work, steps=4, checkpoint_every=2)
  return work


def run_eval(*args):
  return run_binary("eval_tasks.py", *args)


def run_binary(name, *args):
  return subprocess.run([sys.executable, str(ROOT / "experiments" / name), *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


def one_error_line(res) -> str:
  assert res.returncode == 1, res.stderr[-3000:]
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1, res.stderr[-3000:]
  return lines[0]


def test_eval_tasks_table_and_json(run_dir, tmp_path):
  out = tmp_path / "eval.json"
  res = run_eval(f"--workdir={run_dir}", "--tasks=var_swap,else_elif", "--pairs=8",
                 f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "var_swap" in res.stdout and "solved:" in res.stdout
  header = next(line for line in res.stdout.splitlines() if line.startswith("task "))
  assert "test loss" in header and "ood loss" in header and "flags" in header
  assert "last_token_differs" in next(l for l in res.stdout.splitlines() if l.startswith("else_"))
  data = json.loads(out.read_text())
  assert data["step"] == 4 and set(data["tasks"]) == {"var_swap", "else_elif"}
  assert data["splits"] == ["test", "ood"] and "last_token_differs" in data["flags"]
  for name, r in data["tasks"].items():
    assert r["flags"] == (["last_token_differs"] if name == "else_elif" else [])
    assert r["loss"] == r["test"]["loss"]  # the first split decides "solved"
    for split in ("test", "ood"):
      s = r[split]
      assert s["pairs"] == 8 and 0.0 <= s["accuracy"] <= 1.0 and s["loss"] > 0
    assert r["test"] != r["ood"]


def test_eval_tasks_unknown_split_is_a_clear_error(run_dir):
  res = run_eval(f"--workdir={run_dir}", "--tasks=var_swap", "--splits=test,validation")
  assert res.returncode != 0
  assert "error: --splits: unknown split(s) validation; valid: train, test, ood" in res.stderr
  assert "Traceback" not in res.stderr


def test_eval_tasks_unknown_task_is_a_clear_error(run_dir):
  res = run_eval(f"--workdir={run_dir}", "--tasks=var_swap,not_a_task")
  assert res.returncode != 0
  assert "error: unknown task(s) not_a_task; valid tasks: single_double_quote" in res.stderr
  assert "Traceback" not in res.stderr


@pytest.mark.parametrize("flag, message", [
    ("--tasks=", "error: --tasks: no task names given (use 'all' or a comma-separated list)"),
    ("--pairs=0", "error: bad flag: flag --pairs=0: 0 is not a positive integer"),
])
def test_eval_tasks_empty_selection_is_one_line(run_dir, flag, message):
  """Used to be "max() arg is an empty sequence"."""
  assert one_error_line(run_eval(f"--workdir={run_dir}", flag)).startswith(message)


def test_prune_checks_its_inputs_before_pruning(run_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  res = run_binary("prune.py", f"--workdir={run_dir}", "--tasks=var_swap", f"--out={blocker}")
  assert one_error_line(res) == f"error: --out {blocker}: {blocker} is not a directory"
  assert "prune:" not in res.stdout  # nothing was pruned before the error
  res = run_binary("prune.py", f"--workdir={run_dir}", "--tasks=,")
  assert one_error_line(res).startswith("error: --tasks: no task names given")


def test_a_config_json_that_is_not_a_config_is_named(run_dir, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(run_dir, work)
  (work / "config.json").write_text("[]")
  line = one_error_line(run_eval(f"--workdir={work}", "--tasks=var_swap"))
  assert line == (f"error: {work / 'config.json'}: expected a JSON object of config sections, "
                  "got list")


def test_prune_of_a_run_it_cannot_write_keeps_the_means_in_memory(run_dir, tmp_path):
  """`prune --out=ELSEWHERE` of a run it cannot write into: caching the node means in the run
  fails, and the pruning goes on without the cache."""
  from sparsejax.circuits import prune, prune_run
  from sparsejax.train.runs import load_run
  work = tmp_path / "run"
  shutil.copytree(run_dir, work)
  (work / "prune").write_text("a file where the cache directory would go")
  lines = []
  pruner = prune_run.Pruner(load_run(str(work)), prune.PruneConfig(mean_tokens=512), lines.append)
  assert pruner.values.shape == (pruner.layout.n_nodes,)
  assert any(line.startswith("prune: node means not cached (") for line in lines)


def test_viewer_shows_only_the_last_pruning_at_its_own_step(run_dir, tmp_path):
  """Pruning again with other tasks replaces the circuits (no stale pages); the viewer loads the
  checkpoint the circuits were pruned from (step 2), not the latest (4); a garbage line in
  metrics.jsonl costs only the training curve."""
  from sparsejax.pipeline import build_viewer
  work = tmp_path / "run"
  shutil.copytree(run_dir, work)
  out = work / "prune"
  fake_pruning(work, out, ["var_swap", "if_equals"], step=4)
  build_viewer(str(work), str(out), progress=lambda _: None)
  fake_pruning(work, out, ["var_swap"], step=2)
  assert sorted(p.name for p in (out / "circuits").iterdir()) == ["var_swap.json"]
  with open(work / "metrics.jsonl", "a") as f:
    f.write("garbage\n{\"step\": 9, \"loss\": 1.0}\n")
  lines = []
  index = Path(build_viewer(str(work), str(out), progress=lines.append))
  assert sorted(p.name for p in index.parent.glob("task_*.html")) == ["task_var_swap.html"]
  page = index.read_text()
  assert f"run {work} at step 2:" in page and "if_equals" not in page
  assert "Training curve" not in page
  assert any(line.startswith(f"view: no training curve ({work / 'metrics.jsonl'}:")
             for line in lines)


@pytest.mark.parametrize("edit, message", [
    (lambda s, c: s["tasks"]["var_swap"].update(nodes="<b>9</b>"),
     r"summary\.json: tasks\.var_swap\.nodes: expected an integer, got '<b>9</b>'"),
    (lambda s, c: s["config"].update(target_loss="0.15<script>"),
     r"summary\.json: config\.target_loss: expected float"),
    (lambda s, c: s["config"].update(bogus=1), r"summary\.json: config\.bogus: unknown key"),
    (lambda s, c: s.update(step=3), r"mixes outputs of different pruning runs \(circuits/var_swap"
     r"\.json at step 2, summary\.json at step 3\)"),
    (lambda s, c: s.update(step=1, run="x") or c["info"].update(step=1),
     r"pruned at step 1, which cannot be loaded \(no checkpoint 1 in .* \(there are: 2, 4\)\)"),
    (lambda s, c: c.update(counts={"nodes": 1, "edges": 0}),
     r"var_swap\.json: not a circuit file \(ValueError: circuit var_swap: counts do not match"),
])
def test_viewer_names_what_is_wrong_in_pruning_outputs(run_dir, tmp_path, edit, message):
  """Hand-edited or mismatched pruning outputs are one error naming the file and the field,
  before any page is written (numbers used to reach index.html as they were)."""
  from sparsejax.pipeline import build_viewer
  from sparsejax.utils.errors import UserError
  out = tmp_path / "prune"
  fake_pruning(run_dir, out, ["var_swap"], step=2)
  summary = json.loads((out / "summary.json").read_text())
  circuit = json.loads((out / "circuits" / "var_swap.json").read_text())
  edit(summary, circuit)
  (out / "summary.json").write_text(json.dumps(summary))
  (out / "circuits" / "var_swap.json").write_text(json.dumps(circuit))
  with pytest.raises(UserError, match=message):
    build_viewer(str(run_dir), str(out), progress=lambda _: None)
  assert not (out / "viewer").exists()


@pytest.mark.parametrize("name", ["summary.json", "circuits/var_swap.json"])
def test_viewer_names_a_pruning_file_that_is_not_json(run_dir, tmp_path, name):
  out = tmp_path / "prune"
  fake_pruning(run_dir, out, ["var_swap"], step=2)
  (out / name).write_text('{"tasks": ')
  res = run_binary("view.py", f"--workdir={run_dir}", f"--prune_dir={out}")
  assert one_error_line(res).startswith(f"error: {out / name}: not valid JSON (line 1 column 11")

