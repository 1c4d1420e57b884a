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
#panel{width:340px;flex-shrink:0;background:#fff;border:1px solid #ddd;padding:10px 12px;
 font-size:13px;position:sticky;top:10px;max-height:80vh;overflow:auto}
#panel h3{margin:0 0 6px;font-size:15px;word-break:break-all}
circle.node{cursor:pointer;stroke:#333;stroke-width:1}circle.node.selected{stroke:#ff9800;
 stroke-width:3}path.edge{fill:none;stroke-opacity:.6}path.edge.dim{stroke-opacity:.06}
path.edge.hot{stroke-opacity:1}path.link{fill:none;stroke:#999;stroke-width:1;
 stroke-dasharray:3 3;stroke-opacity:.7}text.label{font-size:10px;fill:#333;pointer-events:none}
.controls{font-size:13px;margin:4px 0 8px}
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
const panel = document.getElementById('panel');
const rowH = 24, top = 56, left = 24, labelGap = 9;
let colW = 136;
const el = (tag, attrs) => { const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); return e; };
function text(tag, s, cls) { const e = document.createElement(tag); e.textContent = s;
  if (cls) e.className = cls; return e; }
function fmt(x) { return (x === null || x === undefined) ? '-' : Number(x).toFixed(4); }
const detailOf = id => (data.details.nodes || {})[id];
// Thickness: |weight x mean |activation| of the source node| on the task (the contribution the
// edge carries), relative to the largest drawn.
const strength = e => { const d = detailOf(e.s);
  return Math.abs(e.w) * (d && d.mean_abs !== undefined ? d.mean_abs : 1); };
let edgesOf = {};

function layout(nodes, edges, links) {
  // Layered: one column per site (forward order), nodes ordered in a column by the mean row of
  // their neighbours in earlier columns (barycentre sweeps), columns centred vertically.
  const sites = data.site_order.filter(s => nodes.some(n => n.site === s));
  // Fit the columns to the frame when possible (at least 104 px: labels are channel indices).
  const frame = document.getElementById('graph-wrap').clientWidth || 900;
  colW = Math.max(104, Math.min(150, (frame - 2 * left - 40) / Math.max(sites.length - 1, 1)));
  const cols = sites.map(s => nodes.filter(n => n.site === s).sort((a, b) => a.index - b.index));
  const colOf = {}; sites.forEach((s, i) => colOf[s] = i);
  const nbrs = {};
  for (const e of edges.concat(links)) {
    (nbrs[e.t] = nbrs[e.t] || []).push(e.s); (nbrs[e.s] = nbrs[e.s] || []).push(e.t); }
  const row = {};
  const place = () => cols.forEach(c => c.forEach((n, r) => row[n.id] = r - (c.length - 1) / 2));
  place();
  for (let sweep = 0; sweep < 4; sweep++) {
    const order = sweep % 2 === 0 ? cols.map((c, i) => i) : cols.map((c, i) => cols.length - 1 - i);
    for (const i of order) {
      const key = n => { const ys = (nbrs[n.id] || []).filter(m => row[m] !== undefined &&
          colOf[m.split('[')[0]] !== i).map(m => row[m]);
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : row[n.id]; };
      const keys = {}; cols[i].forEach(n => keys[n.id] = key(n));
      cols[i].sort((a, b) => keys[a.id] - keys[b.id] || a.index - b.index);
      place();
    }
  }
  const maxRows = Math.max(1, ...cols.map(c => c.length));
  const pos = {};
  cols.forEach((c, i) => c.forEach(n =>
    pos[n.id] = [left + colW * i, top + rowH * (row[n.id] + (maxRows - 1) / 2)]));
  return {sites, pos, width: left * 2 + colW * Math.max(sites.length, 1),
          height: top + rowH * maxRows + 10};
}

function curve(a, b) {
  const [x1, y1] = a, [x2, y2] = b, dx = Math.max(30, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

function render() {
  const all = document.getElementById('all-edges').checked;
  const nodes = all ? data.nodes : data.nodes.filter(n => n.essential);
  const shown = new Set(nodes.map(n => n.id));
  const edges = data.edges.filter(e => (all || e.essential) && shown.has(e.s) && shown.has(e.t));
  const links = data.links.filter(l => shown.has(l.s) && shown.has(l.t));
  const g = layout(nodes, edges, links);
  svg.replaceChildren();
  svg.setAttribute('width', g.width); svg.setAttribute('height', g.height);
  // Site names alternate between two rows, so neighbours never overlap however narrow.
  g.sites.forEach((s, i) => { const t = el('text', {x: left + colW * i - 6, y: 16 + 16 * (i % 2),
    class: 'col'}); t.textContent = s; svg.appendChild(t); });
  const linkLayer = el('g', {}), edgeLayer = el('g', {}), nodeLayer = el('g', {});
  svg.append(linkLayer, edgeLayer, nodeLayer);
  edgesOf = {};
  for (const l of links) linkLayer.appendChild(el('path', {d: curve(g.pos[l.s], g.pos[l.t]),
    class: 'link'}));
  const maxS = Math.max(1e-12, ...edges.map(strength));
  for (const e of edges) {
    const p = el('path', {d: curve(g.pos[e.s], g.pos[e.t]), class: 'edge',
      stroke: e.w >= 0 ? '#2166ac' : '#b2182b', 'stroke-width': 0.6 + 4.4 * strength(e) / maxS,
      'data-s': e.s, 'data-t': e.t});
    edgeLayer.appendChild(p);
    (edgesOf[e.s] = edgesOf[e.s] || []).push(p); (edgesOf[e.t] = edgesOf[e.t] || []).push(p);
  }
  for (const n of nodes) {
    const [x, y] = g.pos[n.id];
    const d = detailOf(n.id);
    const fill = !d ? '#ccc' : (d.mean_a - d.mean_b >= 0 ? '#6baed6' : '#fc9272');
    const c = el('circle', {cx: x, cy: y, r: 6, class: 'node', fill: fill, 'data-id': n.id});
    c.addEventListener('click', () => select(n, c));
    const title = el('title', {}); title.textContent = n.id; c.appendChild(title);
    nodeLayer.appendChild(c);
    const t = el('text', {x: x + labelGap, y: y + 3, class: 'label'}); t.textContent = n.index;
    nodeLayer.appendChild(t);
  }
  document.getElementById('count').textContent = nodes.length + ' nodes, ' + edges.length +
    (all ? ' edges (every nonzero weight between kept nodes)' : ' essential edges') + ' drawn';
}

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
  document.querySelectorAll('path.edge').forEach(l => { l.classList.add('dim');
    l.classList.remove('hot'); });
  for (const l of (edgesOf[n.id] || [])) { l.classList.remove('dim'); l.classList.add('hot'); }
  panel.replaceChildren();
  panel.appendChild(text('h3', n.id));
  const d = detailOf(n.id);
  if (!d) { panel.appendChild(text('p', 'No details for this node.')); return; }
  const tbl = document.createElement('table'); tbl.className = 'metrics';
  const rows = [['activation, context A (mean ± std)', fmt(d.mean_a) + ' ± ' + fmt(d.std_a)],
    ['activation, context B (mean ± std)', fmt(d.mean_b) + ' ± ' + fmt(d.std_b)],
    ['task loss change if removed' + (d.ablation_exact ? '' : ' (first-order estimate)'),
     (d.ablation_delta >= 0 ? '+' : '') + fmt(d.ablation_delta)],
    ['edges drawn', String((edgesOf[n.id] || []).length)]];
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
document.getElementById('all-edges').addEventListener('change', render);
render();
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
  """Nodes, edges and residual links for the page; the page lays them out (site columns in
  forward order) and draws the essential ones by default."""
  nodes = circuit["nodes"]
  layers = sorted({int(s.split(".")[0]) for s in nodes})
  order = [f"{l}.{s}" for l in layers for s in PRUNE_SITES]
  edges = [{"s": f"{e['src']}[{e['src_index']}]", "t": f"{e['dst']}[{e['dst_index']}]",
            "w": e["weight"], "essential": bool(e.get("essential", True))}
           for e in circuit["edges"]]
  touched = {x for e in edges if e["essential"] for x in (e["s"], e["t"])}
  pruned = any("essential" in e for e in circuit["edges"])
  out_nodes = [{"id": f"{s}[{i}]", "site": s, "index": i,
                "essential": (f"{s}[{i}]" in touched) if pruned else True}
               for s in order if s in nodes for i in sorted(nodes[s])]
  links = [{"s": f"{l['src']}[{l['index']}]", "t": f"{l['dst']}[{l['index']}]"}
           for l in circuit.get("residual_links", [])]
  return {"site_order": order, "nodes": out_nodes, "edges": edges, "links": links}


def _f(x, digits=3):
  return "-" if x is None else f"{x:.{digits}f}"


def _metric_rows(m: dict, unit: str) -> list[tuple[str, str]]:
  ctrl = m.get("control")
  rows = [("task loss of the circuit (test)", _f(m.get("loss"))),
          ("… with fitted logit scale + shift", _f(m.get("loss_calibrated"))),
          ("only the circuit ablated (inverse)", _f(m.get("inverse_loss"))),
          (f"random circuits, same {unit} (mean)", _f(m.get("random_circuit_loss_mean")))]
  if ctrl:
    rows.append(("shuffled-label control at this size (train / test)",
                 f"{_f(ctrl['loss_train'])} / {_f(ctrl['loss_test'])}"
                 + (" — SOLVES the nonsense task" if ctrl["solves_train"] else "")))
  return rows


def task_page(circuit: dict, details: dict, description: str) -> str:
  m = circuit["metrics"]
  name = circuit["task"]
  counts = circuit["counts"]
  ess = m.get("essential")
  head = [("nodes / edges (every nonzero weight between kept nodes)",
           f"{counts['nodes']} / {counts['edges']}")]
  if ess:
    head.append(("essential edges / the nodes they touch",
                 f"{counts.get('essential_edges')} / {counts.get('essential_nodes')}"))
  head += [("full model", _f(m["full_model_loss"])), ("target", _f(m["target_loss"]))]
  table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                  for k, v in head + _metric_rows(m, "nodes per site"))
  if ess:
    table += "<tr><th colspan=\"2\">essential edges only (the rest mean-ablated)</th></tr>"
    table += "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                     for k, v in _metric_rows(ess, "edges per matrix"))
  curve = svg_line_plot([("task loss", "#2166ac", [tuple(p) for p in m.get("pruning_curve", [])])],
                        log_x=True, x_label="nodes kept (top by τ)", hline=m["target_loss"])
  data = graph_data(circuit) | {"details": details}
  toggle_label = (f"draw every edge between kept nodes ({counts['edges']}), not only the "
                  f"{counts.get('essential_edges')} essential ones" if ess else
                  "draw every edge between kept nodes")
  body = (f"<header><a href=\"index.html\">← all tasks</a><h1>{html.escape(name)}</h1>"
          f"<div>{html.escape(description)}</div></header><main>"
          f"<h2>Numbers</h2><table class=\"metrics\">{table}</table>"
          f"<h2>Pruning curve</h2>{curve}"
          f"<h2>Circuit</h2><div class=\"controls\"><label><input type=\"checkbox\" "
          f"id=\"all-edges\"{'' if ess else ' checked'}> {html.escape(toggle_label)}</label></div>"
          f"<p class=\"muted\"><span id=\"count\"></span>. Columns are sites in forward order, "
          f"labels the channel index. Click a node. Edges: <span style=\"color:#2166ac\">"
          f"positive</span> / <span style=\"color:#b2182b\">negative</span> weights, width ∝ "
          f"|weight × mean |activation| of the source|; dashed: residual stream (a write read "
          f"later on the same channel). Node colour: larger on context A (blue) or B (red).</p>"
          f"<div id=\"layout\"><div id=\"graph-wrap\"><svg id=\"graph\" "
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
    target = summary["config"]["target_loss"]
    cls = lambda x: "good" if x is not None and x <= target else "bad"
    ess = r.get("essential") or {}
    rows.append(
        f"<tr><td class=\"name\"><a href=\"{html.escape(task_file(name))}\">{html.escape(name)}"
        f"</a></td><td>{int(r['nodes'])}</td><td>{int(r['edges'])}</td>"
        f"<td>{r.get('essential_edges', r['edges'])}</td><td class=\"{cls(r['loss'])}\">"
        f"{_f(r['loss'])}</td><td class=\"{cls(ess.get('loss'))}\">{_f(ess.get('loss'))}"
        f"</td><td>{_f(r['loss_calibrated'])}</td><td>{_f(r['full_model_loss'])}</td>"
        f"<td>{_f(r['inverse_loss'])}</td><td>{_f(r['random_circuit_loss_mean'])}</td>"
        f"<td>{html.escape(ctrl_s)}</td><td class=\"name muted\">"
        f"{html.escape(descriptions.get(name, ''))}</td></tr>")
  for name, u in summary["unsolved"].items():
    rows.append(f"<tr><td class=\"name\">{html.escape(name)}</td><td colspan=\"11\" class=\"name "
                f"muted\">not pruned: the full model's test loss {_f(u['full_model_loss_test'])} "
                f"is above the target</td></tr>")
  gm = summary.get("geometric_mean_edges")
  gm_ess = summary.get("geometric_mean_essential_edges")
  curve = ""
  if metrics_rows:
    loss = [(r["step"], r.get("loss")) for r in metrics_rows if isinstance(r.get("loss"), float)]
    ev = [(r["step"], r["eval_loss"]) for r in metrics_rows if isinstance(r.get("eval_loss"),
                                                                         float)]
    curve = ("<h2>Training curve</h2>" + svg_line_plot(
        [("train loss", "#2166ac", loss), ("held-out loss", "#b2182b", ev)], x_label="step"))
  body = (f"<header><h1>sparsejax circuits</h1><div>{html.escape(run_info)}</div></header><main>"
          f"<h2>Circuits (target task loss {float(summary['config']['target_loss']):g})</h2>"
          f"<p>Geometric mean over {len(summary['tasks'])} circuits of the edges (every nonzero "
          f"weight between kept nodes, the paper's count): <b>{_f(gm, 1)}</b>; of the essential "
          f"edges: <b>{_f(gm_ess, 1)}</b></p>"
          f"<table><tr><th class=\"name\">task</th><th>nodes</th><th>edges</th><th>essential "
          f"edges</th><th>loss</th><th>loss, essential edges</th>"
          f"<th>calibrated</th><th>full model</th><th>inverse</th><th>random</th>"
          f"<th>shuffled-label control (train / test)</th><th class=\"name\">what it tests</th>"
          f"</tr>{''.join(rows)}</table>{curve}</main>")
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
