"""The comparison (sparsejax.compare): matching and interpolation, failure flags, the report
writer on fake run results, the family config, and the binary end to end on a tiny family."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsejax.compare import analysis
from sparsejax.compare import report as report_lib
from sparsejax.compare.family import FamilyConfig
from sparsejax.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ fake members
def entry(edges, nodes=None, loss=0.1, rand=1.0, k=None, essential=None):
  nodes = nodes if nodes is not None or edges is None else edges // 4
  e = {"nodes": nodes, "edges": edges, "loss_test": loss,
       "random_loss_mean": rand, "k": k if k is not None else 1}
  if essential is not None:
    e["essential_edges"] = essential
  return e


def member(name, kind, loss, n, l0, sizes, targets=(0.3, 0.15), overrides=None):
  """``sizes``: {task: edges at the primary target}; the sweep halves the size per target
  step (tighter target, bigger circuit: x2)."""
  tasks = {}
  for task, edges in sizes.items():
    sweep = {str(t): entry(int(edges * 2 ** i)) for i, t in enumerate(sorted(targets,
                                                                           reverse=True))}
    tasks[task] = {"primary": entry(edges), "sweep": sweep}
  for (task, target), e in (overrides or {}).items():
    if target == "primary":
      tasks[task]["primary"] = e
    else:
      tasks[task]["sweep"][str(target)] = e
  return analysis.MemberResult(name, kind, loss, n, l0, tasks)


def family_members(overrides=None):
  """One sparse member at loss 2.0 between dense members at 2.2 (N=1e5) and 1.8 (N=4e5)."""
  return [
      member("sparse", "sparse", 2.0, 1_000_000, 100_000, {"a": 100, "b": 400},
             overrides=overrides),
      member("dense_s", "dense", 2.2, 100_000, 100_000, {"a": 800, "b": 3200}),
      member("dense_l", "dense", 1.8, 400_000, 400_000, {"a": 3200, "b": 12800}),
  ]


# ------------------------------------------------------------------ analysis
def test_geometric_mean_counts_a_zero_as_one():
  assert analysis.geometric_mean([4, 16]) == pytest.approx(8.0)
  assert analysis.geometric_mean([0, 16]) == pytest.approx(4.0)
  assert analysis.geometric_mean([]) is None


def test_interpolation_is_linear_in_log_params_between_the_bracketing_dense_members():
  dense = [(100_000, 2.2, 1600.0, "s"), (400_000, 1.8, 6400.0, "l"), (1_600_000, 1.5, 9e9, "x")]
  m = analysis.interpolate_dense(2.0, dense)
  # Halfway in loss between the two: halfway in log N (200k) and in log size (3200).
  assert m["members"] == ["s", "l"] and not m["exact"]
  assert m["params"] == pytest.approx(200_000) and m["size"] == pytest.approx(3200)
  m = analysis.interpolate_dense(2.1, dense)  # a quarter of the way: 1600 · 4^0.25
  assert m["size"] == pytest.approx(1600 * 4 ** 0.25)
  assert analysis.interpolate_dense(1.8, dense) == {"size": 6400.0, "params": 400_000,
                                                    "members": ["l"], "exact": True}
  # Outside the dense range: no extrapolation.
  assert analysis.interpolate_dense(2.5, dense) is None
  assert analysis.interpolate_dense(1.0, dense) is None
  # Order of the input does not matter (sorted by N), and a member with no size is skipped.
  shuffled = [dense[2], (250_000, 1.9, None, "gap"), dense[0], dense[1]]
  assert analysis.interpolate_dense(2.0, shuffled)["size"] == pytest.approx(3200)


def test_non_monotone_dense_losses_use_the_smallest_crossing():
  dense = [(1e5, 2.2, 100.0, "a"), (2e5, 1.9, 200.0, "b"), (4e5, 2.1, 400.0, "c"),
           (8e5, 1.7, 800.0, "d")]
  assert analysis.interpolate_dense(2.0, dense)["members"] == ["a", "b"]


def test_matched_ratio_and_headline_on_fake_members():
  members = family_members()
  out = analysis.analyse(members, (0.3, 0.15), 0.15)
  # Sparse gm edges at 0.15 = sqrt(100·400) = 200; dense at its loss: sqrt(1600·6400) = 3200.
  r = out["fig3"]["matched"]["edges"]["sparse"]
  assert r["sparse"] == pytest.approx(200) and r["dense"] == pytest.approx(3200)
  assert r["ratio"] == pytest.approx(16.0) and r["dense_members"] == ["dense_s", "dense_l"]
  assert out["headline"]["edges"] == pytest.approx(16.0)
  # The sweep: at 0.15 sizes are x2 those at 0.3; the ratio is the same at both targets.
  assert out["headline_by_target"] == {"0.3": pytest.approx(16.0), "0.15": pytest.approx(16.0)}
  assert out["fig2"][1]["members"]["sparse"]["edges"] == pytest.approx(400)
  assert out["headline"]["essential_edges"] is None  # no member reported essential edges


def test_a_search_failure_is_flagged_and_left_out_of_the_headline_only():
  # On task b the sparse circuit misses the target on test: b is left out for every member.
  members = family_members({("b", "primary"): entry(400, loss=0.2)})
  out = analysis.analyse(members, (0.3, 0.15), 0.15)
  fig3 = out["fig3"]
  assert fig3["flags"] == {"sparse": {"b": [analysis.MISSES]}}
  assert fig3["tasks_clean"] == ["a"] and fig3["tasks_reached"] == ["a", "b"]
  # Clean: task a alone, 1600 (dense at its loss) / 100. With failures: both tasks, 3200 / 200.
  assert out["headline"]["edges"] == pytest.approx(16.0)
  assert fig3["members"]["sparse"]["edges"] == pytest.approx(100)
  assert fig3["members"]["sparse"]["edges_with_failures"] == pytest.approx(200)
  # A random circuit of the same size reaching the target is a failure too (the var_if case).
  members = family_members({("a", "primary"): entry(100, rand=0.1)})
  assert analysis.analyse(members, (0.15,), 0.15)["fig3"]["flags"] == {
      "sparse": {"a": [analysis.RANDOM]}}
  # The miss tolerance: 0.2 is within 50 % of 0.15.
  assert analysis.failure_flags(entry(1, loss=0.2), 0.15, miss_tolerance=0.5) == []
  assert analysis.failure_flags(entry(1, loss=0.2, rand=0.1), 0.15) == [analysis.MISSES,
                                                                       analysis.RANDOM]


def test_an_unreached_target_drops_the_task_at_that_target_without_a_flag():
  members = family_members({("b", 0.15): entry(None, k=-1)})
  out = analysis.analyse(members, (0.3, 0.15), 0.15)
  at_015 = out["fig2"][1]
  assert at_015["tasks_reached"] == ["a"] and at_015["flags"] == {}
  assert out["fig2"][0]["tasks_reached"] == ["a", "b"]


def test_a_sparse_member_outside_the_dense_range_is_not_matched():
  members = family_members()
  members[0].heldout_loss = 1.5
  r = analysis.analyse(members, (0.15,), 0.15)["fig3"]["matched"]["edges"]["sparse"]
  assert r["ratio"] is None and "bracket" in r["reason"]


def test_frontier_lines_group_equal_total_params_and_equal_l0():
  mk = lambda name, n, l0: analysis.MemberResult(name, "sparse", 2.0, n, l0, {})
  members = [mk("a", 1000, 100), mk("b", 1000, 200), mk("c", 4000, 102), mk("d", 4000, 400),
             mk("e", 9000, 9000)]
  lines = analysis.frontier_lines(members)
  assert lines["equal_total_params"] == [["a", "b"], ["c", "d"]]
  assert lines["equal_l0"] == [["a", "c"]]  # 100 and 102 are within 5 %


# ------------------------------------------------------------------ the Fig. 2 sweep (planted)
def planted_sweep(taus, targets):
  """``pruning.discretize_at_targets`` on the hand-built model of tests/planted.py, whose task
  needs exactly 4 nodes joined by 4 weights (everything else carries nothing)."""
  import types

  from planted import CFG, hand_built_model, synthetic_task

  from sparsejax.circuits.evaluate import CircuitModel
  from sparsejax.circuits.masks import NodeLayout
  from sparsejax.circuits.prune import PruneConfig
  from sparsejax.compare import pruning

  graphdef, params, buffers = hand_built_model()
  layout = NodeLayout.for_model(CFG)
  model = CircuitModel(graphdef, params, buffers, CFG, np.zeros(layout.n_nodes, np.float32))
  splits = {n: {"val": synthetic_task(32, i), "test": synthetic_task(32, 10 + i)}
            for i, n in enumerate(taus)}
  # The Pruner's parts the sweep reads, around the real circuit model and bisection.
  pruner = types.SimpleNamespace(
      cfg=PruneConfig(random_circuits=2, bisect_rtol=0.0, bisect_grid=0), layout=layout,
      model=model, run=types.SimpleNamespace(params=params, config=types.SimpleNamespace(
          model=CFG)), task_splits=lambda names: {n: splits[n] for n in names})
  full = model.loss_evaluator([splits[n]["val"] for n in taus])(
      np.ones((len(taus), layout.n_nodes), np.float32), np.arange(len(taus)))
  return pruning.discretize_at_targets(pruner, taus, [t(full) for t in targets],
                                       progress=lambda _: None)


def test_the_sweep_bisects_each_tasks_own_tau():
  from planted import CFG, EXPECTED

  from sparsejax.circuits.masks import NodeLayout
  layout = NodeLayout.for_model(CFG)
  need = layout.mask_of(EXPECTED) > 0
  n = layout.n_nodes
  ramp = np.linspace(0.0, -1.0, n)
  first = np.where(need, 2.0, ramp)  # the 4 needed nodes ranked first
  last = np.where(need, -2.0, ramp)  # ... and last: only the full set has them
  just_above = lambda full: float(full.max()) * 1.001 + 1e-6  # the full model's loss
  out = planted_sweep({"first": first, "last": last},
                              [just_above, lambda full: 0.5 * float(full.min()),
                               lambda full: 10.0])
  (t_full, t_below, t_easy), = {tuple(v) for v in out.values()}
  good, bad = out["first"][t_full], out["last"][t_full]
  assert (good["k"], good["nodes"], good["edges"]) == (4, 4, 4)
  assert (bad["k"], bad["nodes"], bad["edges"]) == (n, n, 4)  # the model's only 4 weights
  assert good["loss_test"] <= t_full * 1.01 and good["random_loss_mean"] is not None
  # Below the full model's own loss: unreached, no circuit. Above an empty circuit's: k = 0.
  assert out["first"][t_below]["k"] == -1 and out["first"][t_below]["edges"] is None
  assert out["last"][t_easy]["k"] == 0 and out["last"][t_easy]["edges"] == 0


# ------------------------------------------------------------------ the report writer
def fake_report(tmp_path, members):
  out = analysis.analyse(members, (0.3, 0.15), 0.15)
  rows = []
  for m in members:
    rows.append({"name": m.name, "kind": m.kind, "error": None, "best_lr": 0.01,
                 "best_at_sweep_edge": False, "heldout_loss": m.heldout_loss,
                 "total_params": m.total_params, "l0": m.l0, "tasks_solved": 2,
                 "points": [{"lr": 0.01, "workdir": str(tmp_path / m.name), "heldout_loss":
                             m.heldout_loss, "total_params": m.total_params, "l0": m.l0,
                             "step": 10, "error": None}],
                 "circuits": {t: {"primary": dict(v["primary"], flags=[]),
                                  "sweep": {k: dict(e, flags=[]) for k, e in v["sweep"].items()}}
                              for t, v in m.tasks.items()}})
  rows.append({"name": "broken", "kind": None, "error": "ConfigError: train.seq_len: too long",
               "best_lr": None, "best_at_sweep_edge": False, "heldout_loss": None,
               "total_params": None, "l0": None, "tasks_solved": None,
               "points": [{"lr": 0.01, "workdir": "x", "heldout_loss": None, "total_params": None,
                           "l0": None, "step": None, "error": "ConfigError: ..."}]})
  return {"name": "fake <family>", "family": {"primary_target": 0.15, "targets": [0.3, 0.15]},
          "members": rows, "tasks_compared": ["a", "b"], "method": ["a note"], "analysis": out,
          "headline": out["headline"]}


def test_report_writer_writes_numbers_plots_and_an_index(tmp_path):
  report = fake_report(tmp_path, family_members())
  report_lib.write_report(report, str(tmp_path))
  saved = json.loads((tmp_path / "report.json").read_text())
  assert saved["headline"]["edges"] == pytest.approx(16.0)
  with open(tmp_path / "members.csv") as f:
    rows = {r["model"]: r for r in csv.DictReader(f)}
  assert float(rows["sparse"]["gm_edges"]) == pytest.approx(200)
  assert rows["broken"]["error"].startswith("ConfigError")
  with open(tmp_path / "matched.csv") as f:
    matched = [r for r in csv.DictReader(f) if r["measure"] == "edges"]
  assert {r["target"] for r in matched} == {"0.3", "0.15", "primary"}
  assert all(float(r["ratio"]) == pytest.approx(16.0) for r in matched)
  with open(tmp_path / "circuits.csv") as f:
    assert len(list(csv.DictReader(f))) == 3 * 2 * 3  # members × tasks × (primary + 2 targets)
  index = (tmp_path / "index.html").read_text()
  assert "fake &lt;family&gt;" in index and "<family>" not in index  # escaped
  assert "<b>16.00</b>" in index and "ConfigError" in index
  text = report_lib.format_table(report)
  assert "broken" in text and "FAILED" in text and "16.00x" in text
  pytest.importorskip("matplotlib")
  assert saved["plots"] == {"fig2": report_lib.FIG2, "fig3": report_lib.FIG3}
  for name in (report_lib.FIG2, report_lib.FIG3):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"src='{name}'" in index


def test_report_without_matplotlib_says_the_plots_were_skipped(tmp_path, monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_matplotlib(name, *args, **kwargs):
    if name.startswith("matplotlib"):
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_matplotlib)
  report = fake_report(tmp_path, family_members())
  report_lib.write_report(report, str(tmp_path))
  assert "matplotlib is not installed" in json.loads(
      (tmp_path / "report.json").read_text())["plots"]["skipped"]
  assert "plots skipped" in (tmp_path / "index.html").read_text()
  assert not (tmp_path / report_lib.FIG2).exists()
  assert (tmp_path / "matched.csv").exists()


# ------------------------------------------------------------------ the family config
def smoke_dict():
  sys.path.insert(0, str(ROOT / "experiments" / "configs"))
  import compare as compare_configs  # noqa: PLC0415
  return compare_configs.get_config("smoke").to_dict()


def test_family_config_rejects_bad_fields_in_one_line():
  d = smoke_dict()
  assert [m.name for m in FamilyConfig.from_dict(d).members] == ["dense_a", "dense_b", "sparse"]
  with pytest.raises(ConfigError, match="^prune.stepz: unknown key"):
    FamilyConfig.from_dict(dict(d, prune=dict(d["prune"], stepz=3)))
  with pytest.raises(ConfigError, match="^targets: need target losses > 0"):
    FamilyConfig.from_dict(dict(d, targets=[0.1, -1.0]))
  with pytest.raises(ConfigError, match="^members.sparse.lrs: repeated"):
    FamilyConfig.from_dict(dict(d, members=dict(d["members"], sparse=dict(
        d["members"]["sparse"], lrs=[0.1, 0.1]))))
  with pytest.raises(ConfigError, match="^eval_pairz: unknown key"):
    FamilyConfig.from_dict(dict(d, eval_pairz=3))
  fam = FamilyConfig.from_dict(d)
  assert fam.sweep_targets == (1.5, 1.0, 0.8) and fam.primary_target == 1.0
  point = fam.member("sparse").point_config(0.05)
  assert point["optim"]["lr"] == 0.05 and fam.member("sparse").run["optim"]["lr"] != 0.05


@pytest.mark.parametrize("variant", ["tiny", "tiny_l0", "paper", "smoke"])
def test_every_family_member_is_a_valid_run_config(variant):
  from sparsejax.train.run_config import RunConfig
  sys.path.insert(0, str(ROOT / "experiments" / "configs"))
  import compare as compare_configs  # noqa: PLC0415
  fam = FamilyConfig.from_dict(compare_configs.get_config(variant).to_dict())
  runs = {m.name: RunConfig.from_dict(m.point_config(m.lrs[0])) for m in fam.members}
  kinds = {n: r.sparsity.enabled for n, r in runs.items()}
  assert sum(kinds.values()) >= 1 and sum(not k for k in kinds.values()) >= 2
  assert len({str(r.data) for r in runs.values()}) == 1  # one dataset: comparable losses
  for m in fam.members:  # a dense sweep sits below the sparse one (no sqrt(L0) factor)
    assert len(m.lrs) >= 1 and (max(m.lrs) < 0.01) == (not kinds[m.name])
  if variant == "paper":
    widths = {n: r.model.d_model for n, r in runs.items()}
    assert sorted(widths[n] for n in runs if kinds[n]) == [256, 512, 1024, 1024, 1024, 2048]
    assert sorted(widths[n] for n in runs if not kinds[n]) == [256, 512, 1024]
    assert all(len(m.lrs) == 3 for m in fam.members)


# ------------------------------------------------------------------ end to end
def run_binary(out, *overrides):
  return subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "compare.py"),
       f"--config={ROOT / 'experiments' / 'configs' / 'compare.py'}:smoke", f"--out={out}",
       *overrides], capture_output=True, text=True, timeout=900, cwd=ROOT)


def test_binary_end_to_end_with_a_broken_member_and_a_rerun(tmp_path):
  out = tmp_path / "cmp"
  # dense_b's config is broken (seq_len > block_size): it is reported, the others go on.
  broken = "--config.members.dense_b.run.train.seq_len=1000"  # > block_size
  res = run_binary(out, broken)
  assert res.returncode == 0, res.stderr[-3000:]
  lines = res.stdout.strip().splitlines()
  assert lines[-1].startswith("dense_over_sparse_edges_at_matched_loss: ")
  assert any("member dense_b lr_0.004 (1/1) FAILED: ConfigError: train.seq_len" in l
             for l in lines)
  report = json.loads((out / "report.json").read_text())
  by_name = {m["name"]: m for m in report["members"]}
  assert by_name["dense_b"]["error"].startswith("ConfigError: train.seq_len")
  assert [p["lr"] for p in by_name["sparse"]["points"]] == [0.01, 0.02]
  best = by_name["sparse"]
  assert best["best_lr"] == min(best["points"], key=lambda p: p["heldout_loss"])["lr"]
  assert report["tasks_compared"] == ["var_swap", "if_ternary"]
  for name in ("dense_a", "sparse"):  # normal run directories, pruned, every target swept
    m = by_name[name]
    assert (Path(m["workdir"]) / "checkpoints").is_dir()
    assert (Path(m["workdir"]) / "prune" / "summary.json").exists()
    assert set(m["circuits"]["var_swap"]["sweep"]) == {"1.5", "1.0", "0.8"}
    for task, c in m["circuits"].items():
      # The primary circuit is the full pipeline's (edge pruning, clean-up); the sweep bisects
      # the same chosen τ with the same settings, so at the primary target it starts from the
      # pipeline's bisected circuit, which clean-up only shrinks.
      p, at_primary = c["primary"], c["sweep"]["1.0"]
      assert at_primary["k"] == p["k"] >= 0, (name, task)
      assert p["nodes"] <= at_primary["nodes"] and p["edges"] <= at_primary["edges"]
      assert p["essential_edges"] is not None and p["essential_edges"] <= p["edges"]
  for f in ("index.html", "members.csv", "sweep.csv", "circuit_sizes.csv", "circuits.csv",
            "matched.csv"):
    assert (out / f).exists(), f
  # The rerun skips what is done: no training step, no held-out or task evaluation, no pruning.
  res = run_binary(out, broken)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "member sparse lr_0.01 (1/2): trained (step 4)" in res.stdout
  assert res.stdout.count("pruning already done") == 2
  for done_before in ("training (", " tokens; ", "solved (test loss", "prune: step"):
    assert done_before not in res.stdout, done_before
  assert "member dense_b lr_0.004 (1/1) FAILED" in res.stdout  # still broken, still reported
  again = json.loads((out / "report.json").read_text())
  assert again["analysis"] == report["analysis"]


def test_binary_bad_family_config_is_one_line(tmp_path):
  res = run_binary(tmp_path / "x", "--config.prune.steps=0")
  assert res.returncode == 1 and "Traceback" not in res.stderr
  assert res.stderr.strip().splitlines()[-1] == "error: prune.steps: must be >= 1, got 0"
  assert not (tmp_path / "x").exists()
