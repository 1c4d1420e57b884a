import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparsejax.train.metrics import read_metrics
from sparsejax.train.run_config import RunConfig
from sparsejax.train.loop import train
from sparsejax.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def small_run_config(**train_overrides) -> RunConfig:
  loop = dict(steps=6, batch_size=4, seq_len=32, log_every=2, eval_every=3, eval_batches=1)
  loop.update(train_overrides)
  return RunConfig.from_dict({
      "model": dict(block_size=32, vocab_size=257, n_layer=1, n_head=2, d_head=8, d_model=16,
                    d_mlp=32, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                    learnable_bigram_table=True, grad_checkpointing=False, nope=True),
      "sparsity": dict(target_density=0.25, embed_density_factor=2.0),
      "data": dict(train_tokens=20_000, eval_tokens=2_000, tokenizer="bytes"),
      "train": loop,
  })


def test_train_writes_metrics_and_config(tmp_path):
  lines = []
  last = train(small_run_config(), str(tmp_path), progress=lines.append)
  rows = read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [2, 3, 4, 6]
  for r in rows:
    for key in ("loss", "lr", "l0_fraction", "tokens_per_sec", "grad_rms", "density"):
      assert key in r, key
  assert [r["step"] for r in rows if "eval_loss" in r] == [3, 6]
  assert last["eval_loss"] == rows[-1]["eval_loss"]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["steps"] == 6 and saved["model"]["d_model"] == 16
  assert any(line.startswith("step 6/6") and "ETA" in line and "tok/s" in line for line in lines)


@pytest.mark.parametrize("section, overrides, message", [
    ("train", dict(stepz=3), "train.stepz: unknown key"),
    ("train", dict(steps="3"), "train.steps: expected int"),
    ("optim", dict(lr=-1.0), "optim.lr: must be > 0"),
    ("sparsity", dict(target_density=2.0), "sparsity.target_density: must be in"),
    ("model", dict(afrac=3.0), "model.afrac: must be in"),
    ("data", dict(tokenizer="web"), "data.tokenizer: must be one of"),
    ("data", dict(files_weight=1.0), "data.files: files_weight > 0 needs"),
])
def test_run_config_errors_name_the_field(section, overrides, message):
  base = {"model": dict(vocab_size=257, n_layer=1, n_head=2, d_model=16)}
  base.setdefault(section, {}).update(overrides)
  with pytest.raises(ConfigError, match=message):
    RunConfig.from_dict(base)


def run_binary(*args):
  return subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_binary_rejects_unknown_override_with_nonzero_exit(tmp_path):
  workdir = tmp_path / "run"
  res = run_binary("--config=experiments/configs/tiny.py", f"--workdir={workdir}",
                   "--config.train.stepz=3")
  assert res.returncode != 0
  assert "error: bad flag: 'stepz'" in res.stderr
  assert "Traceback" not in res.stderr
  assert not workdir.exists()


def test_binary_reports_bad_value_in_one_line(tmp_path):
  workdir = tmp_path / "run"
  res = run_binary("--config=experiments/configs/tiny.py", f"--workdir={workdir}",
                   "--config.optim.lr=-0.5")
  assert res.returncode != 0
  assert "error: optim.lr: must be > 0" in res.stderr
  assert not workdir.exists()
