"""The style CI checks (.ci/run): ruff's pyflakes checks and lines <= 100 columns, as configured in
pyproject.toml. Skipped when ruff is not installed (``pip install -e '.[lint]'``)."""

import ast
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


# The package's layers (BUILD.md "Layout"): a module imports only from its own subpackage or from
# a lower layer. "sparsejax" itself is the curated namespace, importable only from the top.
LAYERS = {"utils": 0, "data": 1, "sparse": 1, "model": 2, "tasks": 3, "train": 3, "interop": 4,
          "circuits": 4, "configs": 5, "cli": 5, "pipeline": 5, "sparsejax": 5, "compare": 6}


def _imports(path: Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.lineno, node.module
    elif isinstance(node, ast.Import):
      yield from ((node.lineno, a.name) for a in node.names)


def upward_imports(package: Path) -> list[str]:
  bad = []
  for path in sorted(package.rglob("*.py")):
    rel = path.relative_to(package)
    if rel == Path("__init__.py"):
      continue  # the curated namespace re-exports every layer
    layer = rel.parts[0].removesuffix(".py")
    if layer not in LAYERS:
      bad.append(f"{rel}: subpackage {layer!r} has no layer (add it to LAYERS and BUILD.md)")
      continue
    for line, module in _imports(path):
      parts = module.split(".")
      if parts[0] != "sparsejax":
        continue
      target = parts[1] if len(parts) > 1 else "sparsejax"
      if target != layer and LAYERS.get(target, 99) >= LAYERS[layer]:
        bad.append(f"{rel}:{line}: {layer} imports {module} (not a lower layer)")
  return bad


def test_no_import_runs_upward(tmp_path):
  assert upward_imports(ROOT / "sparsejax") == []
  # The check is live: a model module importing the circuits is reported.
  fake = tmp_path / "sparsejax"
  (fake / "model").mkdir(parents=True)
  (fake / "model" / "gpt.py").write_text("from sparsejax.circuits import prune\nimport numpy\n")
  assert upward_imports(fake) == [
      "model/gpt.py:1: model imports sparsejax.circuits (not a lower layer)"]
