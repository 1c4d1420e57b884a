"""A self-contained HTML circuit viewer: an index page plus one page per task. No server, no network.

Every page carries its data as JSON inside ``<script type="application/json">`` (with ``<``, ``>`` and
``&`` escaped as unicode escapes) and its own small script, which draws the circuit as a layered SVG
graph and writes every piece of text with ``textContent`` — a token such as ``<script>`` shows as
text and never runs. Plots (training curve, pruning curve) are inline SVG made here in Python.
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any, Sequence

from sparsejax.model.sites import PRUNE_SITES
from sparsejax.utils.files import atomic_write

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;
 background:#fafafa}
header{padding:14px 22px;background:#20242b;color:#fff}header a{color:#9cc9ff}
main{padding:16px 22px}h1{font-size:20px;margin:0}h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f0f0f0}
td.name,th.name{text-align:left}.bad{color:#b2182b;font-weight:600}.good{color:#1a7f37}
.metrics td:first-child{text-align:left}.muted{color:#777;font-size:12px}
#layout{display:flex;gap:16px;align-items:flex-start}
#graph-wrap{flex:1;overflow:auto;background:#fff;border:1px solid #ddd;max-height:80vh}
#panel{width:380px;flex-shrink:0;background:#fff;border:1px solid #ddd;padding:10px 12px;
 font-size:13px;position:sticky;top:10px;max-height:80vh;overflow:auto}
#panel h3{margin:0 0 6px;font-size:15px;word-break:break-all}
circle.node{cursor:pointer;stroke:#333;stroke-width:1}circle.node.selected{stroke:#ff9800;
 stroke-width:3}line.edge{stroke-opacity:.55}line.edge.dim{stroke-opacity:.06}
line.edge.hot{stroke-opacity:1}text.label{font-size:9px;fill:#333;pointer-events:none}
text.col{font-size:11px;font-weight:600;fill:#20242b}
.ctx{font-family:ui-monospace,Menlo,monospace;font-size:12px;background:#f6f8fa;padding:3px 5px;
 margin:3px 0;white-space:pre-wrap;word-break:break-all}
.tok{border-right:1px dotted #ccc}.tok.last{background:#ffe08a;font-weight:600}
"""

_TASK_JS = r"""
(function(){
const data = JSON.parse(document.getElementById('circuit-data').textContent);
const NS = 'http://www.w3.org/2000/svg';
const svg = document.getElementById('graph');
const colW = 150, rowH = 22, top = 40, left = 30;
let maxRows = 1;
for (const c of data.columns) maxRows = Math.max(maxRows, c.count);
svg.setAttribute('width', left * 2 + colW * Math.max(data.columns.length, 1));
svg.setAttribute('height', top + rowH * maxRows + 20);
const pos = {};
const el = (tag, attrs) => { const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); return e; };
data.columns.forEach((c, i) => {
  const t = el('text', {x: left + colW * i, y: 18, class: 'col'}); t.textContent = c.site;
  svg.appendChild(t); });
for (const n of data.nodes) pos[n.id] = [left + colW * n.col, top + rowH * n.row];
const edgeLayer = el('g', {}), nodeLayer = el('g', {});
svg.appendChild(edgeLayer); svg.appendChild(nodeLayer);
const maxW = Math.max(1e-12, ...data.edges.map(e => Math.abs(e.w)));
const edgesOf = {};
for (const e of data.edges) {
  const [x1, y1] = pos[e.s], [x2, y2] = pos[e.t];
  const line = el('line', {x1, y1, x2, y2, class: 'edge',
    stroke: e.w >= 0 ? '#2166ac' : '#b2182b', 'stroke-width': 0.5 + 3.5 * Math.abs(e.w) / maxW});
  edgeLayer.appendChild(line);
  (edgesOf[e.s] = edgesOf[e.s] || []).push(line); (edgesOf[e.t] = edgesOf[e.t] || []).push(line);
}
const panel = document.getElementById('panel');
function text(tag, s, cls) { const e = document.createElement(tag); e.textContent = s;
  if (cls) e.className = cls; return e; }
function fmt(x) { return (x === null || x === undefined) ? '-' : Number(x).toFixed(4); }
function showContext(pair, side) {
  const toks = data.details.contexts[pair][side === 'A' ? 0 : 1];
  const div = document.createElement('div'); div.className = 'ctx';
  toks.forEach((t, i) => { div.appendChild(text('span', t,
    'tok' + (i === toks.length - 1 ? ' last' : ''))); });
  return div;
}
function select(n, circle) {
  document.querySelectorAll('circle.node.selected').forEach(c => c.classList.remove('selected'));
  circle.classList.add('selected');
  document.querySelectorAll('line.edge').forEach(l => { l.classList.add('dim');
    l.classList.remove('hot'); });
  for (const l of (edgesOf[n.id] || [])) { l.classList.remove('dim'); l.classList.add('hot'); }
  panel.replaceChildren();
  panel.appendChild(text('h3', n.id));
  const d = data.details.nodes[n.id];
  if (!d) { panel.appendChild(text('p', 'No details for this node.')); return; }
  const tbl = document.createElement('table'); tbl.className = 'metrics';
  const rows = [['activation, context A (mean ± std)', fmt(d.mean_a) + ' ± ' + fmt(d.std_a)],
    ['activation, context B (mean ± std)', fmt(d.mean_b) + ' ± ' + fmt(d.std_b)],
    ['task loss change if removed' + (d.ablation_exact ? '' : ' (first-order estimate)'),
     (d.ablation_delta >= 0 ? '+' : '') + fmt(d.ablation_delta)],
    ['edges', String((edgesOf[n.id] || []).length)]];
  for (const [k, v] of rows) { const tr = document.createElement('tr');
    tr.appendChild(text('td', k)); tr.appendChild(text('td', v)); tbl.appendChild(tr); }
  panel.appendChild(tbl);
  panel.appendChild(text('h4', 'Where it is largest (scored token highlighted)'));
  for (const t of d.top) {
    panel.appendChild(text('div', 'pair ' + t.pair + ', context ' + t.side + ': ' + fmt(t.value),
                           'muted'));
    panel.appendChild(showContext(t.pair, t.side));
  }
}
for (const n of data.nodes) {
  const [x, y] = pos[n.id];
  const d = data.details.nodes[n.id];
  const fill = !d ? '#ccc' : (d.mean_a - d.mean_b >= 0 ? '#6baed6' : '#fc9272');
  const c = el('circle', {cx: x, cy: y, r: 6, class: 'node', fill: fill, 'data-id': n.id});
  c.addEventListener('click', () => select(n, c));
  nodeLayer.appendChild(c);
  const t = el('text', {x: x + 9, y: y + 3, class: 'label'}); t.textContent = n.id;
  nodeLayer.appendChild(t);
}
document.getElementById('count').textContent =
  data.nodes.length + ' nodes, ' + data.edges.length + ' edges drawn';
})();
"""


def _json_for_script(obj: Any) -> str:
  """JSON that is safe inside <script type="application/json">: no '<', '>' or '&' characters."""
  return (json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
          .replace("&", "\\u0026"))


def _page(title: str, body: str, script: str = "") -> str:
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}"
          f"</title><style>{_CSS}</style></head><body>{body}{script}</body></html>\n")


def svg_line_plot(series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], *,
                  width: int = 560, height: int = 240, log_x: bool = False, x_label: str = "",
                  hline: float | None = None) -> str:
  """An inline SVG line plot of (name, colour, [(x, y), ...]) series."""
  pts = [(x, y) for _, _, s in series for x, y in s
         if y is not None and math.isfinite(y) and (x > 0 or not log_x)]
  if not pts:
    return "<p class=\"muted\">no data</p>"
  fx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
  xs, ys = [fx(x) for x, _ in pts], [y for _, y in pts] + ([hline] if hline is not None else [])
  x0, x1, y0, y1 = min(xs), max(xs), min(min(ys), 0.0), max(ys)
  x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
  L, R, Tp, B = 48, 10, 10, 30
  sx = lambda x: L + (fx(x) - x0) / (x1 - x0) * (width - L - R)
  sy = lambda y: Tp + (1 - (y - y0) / (y1 - y0)) * (height - Tp - B)
  out = [f"<svg class=\"plot\" width=\"{width}\" height=\"{height}\" xmlns=\"http://www.w3.org/"
         f"2000/svg\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"]
  for frac in (0, 0.25, 0.5, 0.75, 1):
    y = y0 + frac * (y1 - y0)
    out.append(f"<line x1=\"{L}\" x2=\"{width - R}\" y1=\"{sy(y):.1f}\" y2=\"{sy(y):.1f}\" "
               f"stroke=\"#eee\"/><text x=\"4\" y=\"{sy(y) + 4:.1f}\" font-size=\"10\">"
               f"{y:.3g}</text>")
  for frac in (0, 0.5, 1):
    xv = x0 + frac * (x1 - x0)
    label = f"{10 ** xv:.3g}" if log_x else f"{xv:.3g}"
    out.append(f"<text x=\"{L + frac * (width - L - R) - 10:.1f}\" y=\"{height - 14}\" "
               f"font-size=\"10\">{label}</text>")
  if hline is not None:
    out.append(f"<line x1=\"{L}\" x2=\"{width - R}\" y1=\"{sy(hline):.1f}\" y2=\"{sy(hline):.1f}\""
               f" stroke=\"#999\" stroke-dasharray=\"4 3\"/>")
  for i, (name, colour, s) in enumerate(series):
    good = [(x, y) for x, y in s if y is not None and math.isfinite(y) and (x > 0 or not log_x)]
    if good:
      d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
      out.append(f"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" "
                 f"points=\"{d}\"/>")
    out.append(f"<text x=\"{width - R - 120}\" y=\"{Tp + 12 + 13 * i}\" font-size=\"11\" "
               f"fill=\"{colour}\">{html.escape(name)}</text>")
  out.append(f"<text x=\"{width / 2 - 30:.0f}\" y=\"{height - 2}\" font-size=\"11\">"
             f"{html.escape(x_label)}</text></svg>")
  return "".join(out)


def graph_data(circuit: dict) -> dict:
  """Columns (sites with kept nodes, in forward order), node positions and edges for the page."""
  nodes = circuit["nodes"]
  layers = sorted({int(s.split(".")[0]) for s in nodes})
  order = [f"{l}.{s}" for l in layers for s in PRUNE_SITES if f"{l}.{s}" in nodes]
  columns = [{"site": s, "count": len(nodes[s])} for s in order]
  out_nodes = [{"id": f"{s}[{i}]", "site": s, "index": i, "col": c, "row": r}
               for c, s in enumerate(order) for r, i in enumerate(sorted(nodes[s]))]
  edges = [{"s": f"{e['src']}[{e['src_index']}]", "t": f"{e['dst']}[{e['dst_index']}]",
            "w": e["weight"]} for e in circuit["edges"]]
  return {"columns": columns, "nodes": out_nodes, "edges": edges}


def _f(x, digits=3):
  return "-" if x is None else f"{x:.{digits}f}"


def task_page(circuit: dict, details: dict, description: str) -> str:
  m = circuit["metrics"]
  name = circuit["task"]
  ctrl = m.get("control")
  rows = [("nodes / edges", f"{circuit['counts']['nodes']} / {circuit['counts']['edges']}"),
          ("task loss of the circuit (test)", _f(m["loss"])),
          ("… with fitted logit scale + shift", _f(m.get("loss_calibrated"))),
          ("full model", _f(m["full_model_loss"])),
          ("only the circuit ablated (inverse)", _f(m["inverse_loss"])),
          ("random circuits, same nodes per site (mean)", _f(m.get("random_circuit_loss_mean"))),
          ("target", _f(m["target_loss"]))]
  if ctrl:
    rows.append(("shuffled-label control at this size (train / test)",
                 f"{_f(ctrl['loss_train'])} / {_f(ctrl['loss_test'])}"
                 + (" — SOLVES the nonsense task" if ctrl["solves_train"] else "")))
  table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
  curve = svg_line_plot([("task loss", "#2166ac", [tuple(p) for p in m.get("pruning_curve", [])])],
                        log_x=True, x_label="nodes kept (top by τ)", hline=m["target_loss"])
  data = graph_data(circuit) | {"details": details}
  body = (f"<header><a href=\"index.html\">← all tasks</a><h1>{html.escape(name)}</h1>"
          f"<div>{html.escape(description)}</div></header><main>"
          f"<h2>Numbers</h2><table class=\"metrics\">{table}</table>"
          f"<h2>Pruning curve</h2>{curve}"
          f"<h2>Circuit</h2><p class=\"muted\"><span id=\"count\"></span>. Click a node. Edges: "
          f"<span style=\"color:#2166ac\">positive</span> / <span style=\"color:#b2182b\">negative"
          f"</span> weights, width ∝ |weight|. Node colour: larger on context A (blue) or B (red)."
          f"</p><div id=\"layout\"><div id=\"graph-wrap\"><svg id=\"graph\" "
          f"xmlns=\"http://www.w3.org/2000/svg\"></svg></div><aside id=\"panel\">"
          f"<p class=\"muted\">Select a node to see what it does.</p></aside></div></main>"
          f"<script type=\"application/json\" id=\"circuit-data\">{_json_for_script(data)}</script>")
  return _page(f"{name} — sparsejax circuit", body, f"<script>{_TASK_JS}</script>")


def index_page(summary: dict, *, descriptions: dict, metrics_rows: list[dict] | None,
               run_info: str) -> str:
  rows = []
  for name, r in summary["tasks"].items():
    ctrl = r.get("control") or {}
    ctrl_s = (f"{_f(ctrl.get('loss_train'))} / {_f(ctrl.get('loss_test'))}"
              + (" SOLVES" if ctrl.get("solves_train") else "")) if ctrl else "-"
    cls = "good" if r["loss"] <= summary["config"]["target_loss"] else "bad"
    rows.append(
        f"<tr><td class=\"name\"><a href=\"{html.escape(task_file(name))}\">{html.escape(name)}"
        f"</a></td><td>{int(r['nodes'])}</td><td>{int(r['edges'])}</td>"
        f"<td class=\"{cls}\">{_f(r['loss'])}"
        f"</td><td>{_f(r['loss_calibrated'])}</td><td>{_f(r['full_model_loss'])}</td>"
        f"<td>{_f(r['inverse_loss'])}</td><td>{_f(r['random_circuit_loss_mean'])}</td>"
        f"<td>{html.escape(ctrl_s)}</td><td class=\"name muted\">"
        f"{html.escape(descriptions.get(name, ''))}</td></tr>")
  for name, u in summary["unsolved"].items():
    rows.append(f"<tr><td class=\"name\">{html.escape(name)}</td><td colspan=\"9\" class=\"name "
                f"muted\">not pruned: the full model's test loss {_f(u['full_model_loss_test'])} "
                f"is above the target</td></tr>")
  gm = summary.get("geometric_mean_edges")
  curve = ""
  if metrics_rows:
    loss = [(r["step"], r.get("loss")) for r in metrics_rows if isinstance(r.get("loss"), float)]
    ev = [(r["step"], r["eval_loss"]) for r in metrics_rows if isinstance(r.get("eval_loss"),
                                                                         float)]
    curve = ("<h2>Training curve</h2>" + svg_line_plot(
        [("train loss", "#2166ac", loss), ("held-out loss", "#b2182b", ev)], x_label="step"))
  body = (f"<header><h1>sparsejax circuits</h1><div>{html.escape(run_info)}</div></header><main>"
          f"<h2>Circuits (target task loss {float(summary['config']['target_loss']):g})</h2>"
          f"<table><tr><th class=\"name\">task</th><th>nodes</th><th>edges</th><th>loss</th>"
          f"<th>calibrated</th><th>full model</th><th>inverse</th><th>random</th>"
          f"<th>shuffled-label control (train / test)</th><th class=\"name\">what it tests</th>"
          f"</tr>{''.join(rows)}</table><p>Geometric mean of edges over "
          f"{len(summary['tasks'])} circuits: <b>{_f(gm, 1)}</b></p>{curve}</main>")
  return _page("sparsejax circuits", body)


def task_file(name: str) -> str:
  return f"task_{name}.html"


def write_site(out_dir: str, summary: dict, circuits: dict, details: dict, descriptions: dict,
               metrics_rows: list[dict] | None, run_info: str) -> str:
  """Writes index.html and one page per circuit; returns the index path."""
  os.makedirs(out_dir, exist_ok=True)
  for name, c in circuits.items():
    atomic_write(os.path.join(out_dir, task_file(name)),
                 task_page(c, details.get(name, {"nodes": {}, "contexts": []}),
                           descriptions.get(name, "")))
  index = os.path.join(out_dir, "index.html")
  atomic_write(index, index_page(summary, descriptions=descriptions, metrics_rows=metrics_rows,
                                 run_info=run_info))
  return index
