"""The README's library example runs as written."""

import re
from pathlib import Path

import numpy as np


def test_readme_python_example_runs():
  text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  env: dict = {}
  exec(compile(code, "README.md", "exec"), env)
  assert env["logits"].shape == (4, 64, 2048)
  assert set(env["cache"]) == {"0.attn.q", "blocks.1.hook_mlp_out"}  # the names as asked
  assert not np.allclose(np.asarray(env["ablated"]), np.asarray(env["logits"]))
  assert float(env["metrics"]["loss"]) > 0
