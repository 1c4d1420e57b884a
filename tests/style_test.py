"""The style CI checks (.ci/run): ruff's pyflakes checks and lines <= 100 columns, as configured in
pyproject.toml. Skipped when ruff is not installed (``pip install -e '.[lint]'``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff():
  found = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
  return found if Path(found).exists() else None


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed (pip install -e '.[lint]')")
def test_the_repository_passes_the_style_check(tmp_path):
  res = subprocess.run([_ruff(), "check", "--no-cache", "."], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
  assert res.returncode == 0, res.stdout[-3000:]
  # The check is live: a long line and an unused import in a file it sees are reported.
  bad = tmp_path / "bad.py"
  bad.write_text("import os\nx = '" + "a" * 100 + "'\n")
  res = subprocess.run([_ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                        str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert res.returncode == 1 and "F401" in res.stdout and "E501" in res.stdout
