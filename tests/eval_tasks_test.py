"""experiments/eval_tasks.py on a freshly trained (tiny, BPE) run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import train_tiny_bpe_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  work = tmp_path_factory.mktemp("run")
  train_tiny_bpe_run(work, steps=4)
  return work


def run_eval(*args):
  return subprocess.run([sys.executable, str(ROOT / "experiments" / "eval_tasks.py"), *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


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
