"""The comparison's report directory: numbers (JSON, CSV), plots (PNG) and an HTML index.

  report.json          everything: members, sweeps, tasks, Fig. 2 / Fig. 3 numbers, ratios, flags
  members.csv          one row per member (the table)
  sweep.csv            one row per learning-rate sweep point
  circuit_sizes.csv    Fig. 2: geometric-mean size per member and target
  circuits.csv         every circuit: member, task, target, size, losses, flags
  matched.csv          sparse vs dense at matched pretraining loss, per target and size measure
  fig2_circuit_size.png, fig3_frontier.png   (with matplotlib, the ``plots`` extra)
  index.html           the report page, linking each member's circuit viewer

Plots need matplotlib (``pip install 'sparsejax[plots]'``); without it the report has every number
and says that the plots were skipped.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os

from sparsejax.utils.files import atomic_write, atomic_write_json

FIG2 = "fig2_circuit_size.png"
FIG3 = "fig3_frontier.png"


def _fmt(x, digits: int = 0) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "-"
  if isinstance(x, float):
    return f"{x:,.{digits}f}"
  return f"{x:,}" if isinstance(x, int) else str(x)


def _lr(x) -> str:
  return "-" if x is None else f"{x:.3g}"


def _ratio(x) -> str:
  return "n/a" if x is None else f"{x:.2f}"


def member_rows(report: dict) -> list[dict]:
  """One row per member for the table and members.csv."""
  fig3 = report["analysis"]["fig3"]["members"] if report.get("analysis") else {}
  rows = []
  for m in report["members"]:
    gm = fig3.get(m["name"], {})
    rows.append({"model": m["name"], "kind": m["kind"], "total_params": m.get("total_params"),
                 "l0": m.get("l0"), "best_lr": m.get("best_lr"),
                 "heldout_loss": m.get("heldout_loss"), "tasks_solved": m.get("tasks_solved"),
                 "gm_edges": gm.get("edges"), "gm_nodes": gm.get("nodes"),
                 "gm_essential_edges": gm.get("essential_edges"),
                 "gm_edges_with_failures": gm.get("edges_with_failures"),
                 "error": m.get("error")})
  return rows


def format_table(report: dict) -> str:
  """The members table as text, then the matched-loss ratios and the flagged circuits."""
  p = report["family"]["primary_target"]
  lines = [f"{'model':<14} {'kind':<6} {'total params':>12} {'L0':>10} {'lr':>8} "
           f"{'held-out':>8} {'solved':>6} {f'edges@{p:g}':>10} {f'nodes@{p:g}':>10} "
           f"{'essential':>9}"]
  for r in member_rows(report):
    if r["error"] and r["heldout_loss"] is None:
      lines.append(f"{r['model']:<14} FAILED: {r['error']}")
      continue
    lines.append(
        f"{r['model']:<14} {r['kind'] or '-':<6} {_fmt(r['total_params']):>12} "
        f"{_fmt(r['l0']):>10} {_lr(r['best_lr']):>8} "
        f"{_fmt(r['heldout_loss'], 4):>8} {_fmt(r['tasks_solved']):>6} "
        f"{_fmt(r['gm_edges'], 1):>10} {_fmt(r['gm_nodes'], 1):>10} "
        f"{_fmt(r['gm_essential_edges'], 1):>9}" + (f"  ({r['error']})" if r["error"] else ""))
  a = report.get("analysis")
  if not a:
    lines.append(report.get("note", "no circuits to compare"))
    return "\n".join(lines)
  fig3 = a["fig3"]
  lines.append(f"tasks compared at {p:g}: {len(fig3['tasks_clean'])} clean of "
               f"{len(fig3['tasks_reached'])} ({', '.join(fig3['tasks_clean']) or '-'})")
  for name, flagged in fig3["flags"].items():
    for task, flags in flagged.items():
      lines.append(f"  search failure: {name} / {task}: {', '.join(flags)}")
  for name, r in fig3["matched"]["edges"].items():
    with_f = fig3["matched"]["edges_with_failures"][name]["ratio"]
    if r["ratio"] is None:
      lines.append(f"  {name}: not matched ({r['reason']})")
    else:
      lines.append(f"  {name}: dense {r['dense']:,.1f} / sparse {r['sparse']:,.1f} edges = "
                   f"{r['ratio']:.2f}x (dense at {r['dense_params']:,.0f} params, between "
                   f"{' and '.join(r['dense_members'])}); with failures {_ratio(with_f)}")
  for t, h in a["headline_by_target"].items():
    lines.append(f"  target {float(t):g}: dense/sparse edges at matched loss {_ratio(h)}")
  return "\n".join(lines)


def _csv(path: str, rows: list[dict]) -> None:
  buf = io.StringIO()
  if rows:
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
  atomic_write(path, buf.getvalue())


def _csv_tables(report: dict) -> dict[str, list[dict]]:
  a = report.get("analysis") or {}
  sweep = [{"member": m["name"], "lr": p["lr"], "heldout_loss": p["heldout_loss"],
            "step": p["step"], "total_params": p["total_params"], "l0": p["l0"],
            "kept": m.get("best_lr") == p["lr"], "error": p["error"], "workdir": p["workdir"]}
           for m in report["members"] for p in m["points"]]
  sizes, matched = [], []
  for s in a.get("fig2", []):
    for name, row in s["members"].items():
      sizes.append({"member": name, "target": s["target"], **row,
                    "tasks_clean": len(s["tasks_clean"]),
                    "tasks_reached": len(s["tasks_reached"])})
  for s in a.get("fig2", []) + ([dict(a["fig3"], target="primary")] if a else []):
    for measure, ratios in s["matched"].items():
      for name, r in ratios.items():
        matched.append({"target": s["target"], "measure": measure, "sparse_member": name,
                        "sparse": r["sparse"], "dense": r["dense"], "ratio": r["ratio"],
                        "dense_params": r.get("dense_params"),
                        "dense_members": "+".join(r.get("dense_members", [])),
                        "reason": r.get("reason")})
  circuits = []
  for m in report["members"]:
    for task, t in (m.get("circuits") or {}).items():
      for target, e in [("primary", t["primary"])] + sorted(t["sweep"].items()):
        flags = [] if e.get("edges") is None else e.get("flags", [])
        circuits.append({"member": m["name"], "task": task, "target": target,
                         "nodes": e.get("nodes"), "edges": e.get("edges"),
                         "essential_edges": e.get("essential_edges"),
                         "loss_test": e.get("loss_test"),
                         "random_loss_mean": e.get("random_loss_mean"),
                         "flags": " ".join(flags)})
  return {"members.csv": member_rows(report), "sweep.csv": sweep, "circuit_sizes.csv": sizes,
          "circuits.csv": circuits, "matched.csv": matched}


# ------------------------------------------------------------------ plots
def write_plots(report: dict, out_dir: str) -> dict:
  """Fig. 2 and Fig. 3 as PNGs; {"fig2": file, "fig3": file} or {"skipped": why}."""
  a = report.get("analysis")
  if not a:
    return {"skipped": "no circuits to plot"}
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return {"skipped": "matplotlib is not installed (pip install 'sparsejax[plots]')"}
  kinds = {m["name"]: m["kind"] for m in report["members"]}
  _fig2(plt, a, kinds, os.path.join(out_dir, FIG2))
  _fig3(plt, report, a, kinds, os.path.join(out_dir, FIG3))
  return {"fig2": FIG2, "fig3": FIG3}


def _colors(plt, kinds: dict) -> dict:
  sparse = [n for n, k in kinds.items() if k == "sparse"]
  dense = [n for n, k in kinds.items() if k == "dense"]
  out = {}
  for names, cmap in ((sparse, plt.get_cmap("Blues")), (dense, plt.get_cmap("Oranges"))):
    for i, n in enumerate(names):
      out[n] = cmap(0.45 + 0.5 * (i + 1) / (len(names) + 1))
  return out


def _fig2(plt, a: dict, kinds: dict, path: str) -> None:
  colors = _colors(plt, kinds)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
  for ax, measure in zip(axes, ("edges", "nodes")):
    for name in a["fig3"]["members"]:
      pts = [(s["members"][name][measure], s["target"]) for s in a["fig2"]
             if s["members"][name][measure] is not None]
      if pts:
        ax.plot(*zip(*pts), "o-" if kinds[name] == "sparse" else "s--", color=colors[name],
                label=f"{name} ({kinds[name]})")
    for sparse in (n for n, k in kinds.items() if k == "sparse"):
      pts = [(s["matched"][measure][sparse]["dense"], s["target"]) for s in a["fig2"]
             if sparse in s["matched"][measure] and s["matched"][measure][sparse]["ratio"]]
      if pts:
        ax.plot(*zip(*pts), ":", color="black", alpha=0.6,
                label=f"dense at {sparse}'s loss (interpolated)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"circuit size ({measure}, geometric mean over tasks)")
    ax.set_ylabel("target task loss")
    ax.grid(True, which="both", alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=7)
  fig.suptitle("Fig. 2 analogue: circuit size needed to reach each target loss")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _fig3(plt, report: dict, a: dict, kinds: dict, path: str) -> None:
  colors = _colors(plt, kinds)
  members = {m["name"]: m for m in report["members"]}
  fig3 = a["fig3"]["members"]
  measures = ["edges"] + (["essential_edges"] if any(
      r["essential_edges"] is not None for r in fig3.values()) else [])
  fig, axes = plt.subplots(1, len(measures), figsize=(6.5 * len(measures), 5), squeeze=False)
  xy = lambda n, measure: (members[n]["heldout_loss"], fig3[n][measure])
  for ax, measure in zip(axes[0], measures):
    for lines, style, label in ((a["frontier_lines"]["equal_total_params"], "-",
                                 "equal total params"),
                                (a["frontier_lines"]["equal_l0"], "--", "equal L0")):
      for i, line in enumerate(lines):
        pts = [xy(n, measure) for n in line if fig3.get(n, {}).get(measure)]
        if len(pts) > 1:
          ax.plot(*zip(*pts), style, color="grey", alpha=0.7, label=label if i == 0 else None)
    for n, r in fig3.items():
      if r[measure] is None:
        continue
      x, y = xy(n, measure)
      ax.scatter([x], [y], marker="o" if kinds[n] == "sparse" else "s", color=colors[n],
                 edgecolor="black", zorder=3, s=50)
      m = members[n]
      ax.annotate(f"{n}\nN={m['total_params']:,} L0={m['l0']:,}", (x, y), fontsize=7,
                  xytext=(4, 4), textcoords="offset points")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("pretraining loss (held-out, nats/token)")
    ax.set_ylabel(f"{measure.replace('_', ' ')} at target {a['primary_target']:g} "
                  "(geometric mean over tasks)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle("Fig. 3 analogue: capability vs interpretability (o sparse, s dense)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ------------------------------------------------------------------ HTML
_CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{padding:14px 22px;background:#20242b;color:#fff}main{padding:16px 22px;max-width:1300px}
h1{font-size:20px;margin:0}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f0f0f0}
td.l,th.l{text-align:left}.bad{color:#b2182b;font-weight:600}.big{font-size:18px}
img{max-width:100%;border:1px solid #ddd;background:#fff}.muted{color:#666;font-size:13px}"""


def _table(head: list[str], rows: list[list], left: int = 1) -> str:
  cell = lambda tag, i, x: f"<{tag}{' class=l' if i < left else ''}>{x}</{tag}>"
  out = ["<table><tr>" + "".join(cell("th", i, html.escape(h)) for i, h in enumerate(head))
         + "</tr>"]
  for r in rows:
    out.append("<tr>" + "".join(cell("td", i, x) for i, x in enumerate(r)) + "</tr>")
  return "".join(out) + "</table>"


def write_index(report: dict, out_dir: str) -> str:
  e = html.escape
  fam, a = report["family"], report.get("analysis")
  p = fam["primary_target"]
  parts = [f"<header><h1>Sparse vs dense circuits: {e(report['name'])}</h1></header><main>"]
  h = report["headline"]
  parts.append(f"<p class=big>dense ÷ sparse edges at matched pretraining loss (target {p:g}, "
               f"search failures excluded): <b>{_ratio(h['edges'])}</b></p><p class=muted>"
               f"with failures: {_ratio(h['edges_with_failures'])}; nodes: {_ratio(h['nodes'])}"
               f"; essential edges: {_ratio(h['essential_edges'])}. The paper's Fig. 2 "
               "reports about 16x.</p>")
  rows = []
  for r, m in zip(member_rows(report), report["members"]):
    viewer = m.get("viewer")
    name = (f"<a href='{e(viewer)}'>{e(r['model'])}</a>" if viewer else e(r["model"]))
    rows.append([name, e(r["kind"] or "-"), _fmt(r["total_params"]), _fmt(r["l0"]),
                 _lr(r["best_lr"]) + (" (edge)" if m.get("best_at_sweep_edge") else ""),
                 _fmt(r["heldout_loss"], 4), _fmt(r["tasks_solved"]), _fmt(r["gm_edges"], 1),
                 _fmt(r["gm_nodes"], 1), _fmt(r["gm_essential_edges"], 1),
                 f"<span class=bad>{e(r['error'])}</span>" if r["error"] else ""])
  parts.append("<h2>Members</h2>" + _table(
      ["model", "kind", "total params", "L0", "lr kept", "held-out loss", "tasks solved",
       f"edges @{p:g}", f"nodes @{p:g}", "essential edges", "error"], rows, left=2)
      + "<p class=muted>Names link to each member's circuit viewer. Sizes are geometric means "
      "over the clean tasks compared; 'edge' marks a kept learning rate at the end of its "
      "sweep.</p>")
  plots = report["plots"]
  if "skipped" in plots:
    parts.append(f"<h2>Plots</h2><p class=bad>plots skipped: {e(plots['skipped'])}</p>")
  else:
    parts.append(f"<h2>Fig. 2: circuit size at each target loss</h2><img src='{FIG2}'>"
                 f"<h2>Fig. 3: pretraining loss vs circuit size</h2><img src='{FIG3}'>")
  if a:
    rows = []
    for s in a["fig2"] + [dict(a["fig3"], target=f"{p:g} (pipeline)")]:
      for name, r in s["matched"]["edges"].items():
        wf = s["matched"]["edges_with_failures"][name]
        rows.append([e(str(s["target"])), e(name), _fmt(r["sparse"], 1), _fmt(r["dense"], 1),
                     _ratio(r["ratio"]), _ratio(wf["ratio"]),
                     e(" + ".join(r.get("dense_members", [])) or r.get("reason", "")),
                     f"{len(s['tasks_clean'])} / {len(s['tasks_reached'])}"])
    parts.append("<h2>Matched pretraining loss</h2>" + _table(
        ["target", "sparse member", "sparse edges", "dense edges (interp.)", "ratio",
         "ratio with failures", "dense members", "clean / reached tasks"], rows, left=2))
    rows = [[e(m), e(t), e(", ".join(f))] for m, ts in a["fig3"]["flags"].items()
            for t, f in ts.items()]
    for s in a["fig2"]:
      rows += [[e(m), e(f"{t} @ {s['target']:g}"), e(", ".join(f))]
               for m, ts in s["flags"].items() for t, f in ts.items()]
    parts.append("<h2>Search failures (excluded from the headline)</h2>"
                 + (_table(["member", "task", "flags"], rows, left=3) if rows else "<p>none</p>"))
  parts.append("<h2>Method</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in report["method"])
               + "</ul><p class=muted>Numbers: report.json, members.csv, sweep.csv, "
               "circuit_sizes.csv, circuits.csv, matched.csv.</p></main>")
  page = (f"<!doctype html><html><head><meta charset=utf-8><title>{e(report['name'])}</title>"
          f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
  path = os.path.join(out_dir, "index.html")
  atomic_write(path, page)
  return path


def write_report(report: dict, out_dir: str) -> dict:
  """Writes every file of the report directory (plots first: the JSON records whether they were
  made); returns the paths written."""
  os.makedirs(out_dir, exist_ok=True)
  report["plots"] = write_plots(report, out_dir)
  atomic_write_json(os.path.join(out_dir, "report.json"), report, indent=2)
  paths = {}
  for name, rows in _csv_tables(report).items():
    paths[name] = os.path.join(out_dir, name)
    _csv(paths[name], rows)
  paths["index.html"] = write_index(report, out_dir)
  return paths
