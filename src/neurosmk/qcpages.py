"""QC HTML pages: one per visit (``<output_dir>/sub-X[_ses-Y].html``, fMRIPrep's layout) and one
group page (``<output_dir>/group/qc.html``).

Pages are static HTML with relative links (figures stay PNG files in ``sub-X/figures/``), no
scripts and nothing fetched from the network, so they open offline and a page stays small
whatever the number of subjects.  The group page reads only the per-visit metrics JSON files
(``neurosmk.qc_metrics``): building it for 1,000 subjects takes well under a second
(benchmarks/bench_qc_group.py).
"""

from __future__ import annotations

import html
import json
import math
import os
import re

from .io import write_text
from .qc_metrics import METRICS, read_visit_metrics

Z_THRESHOLD = 3.5  # |robust z| above this is an outlier (Iglewicz & Hoaglin's modified z-score)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2125;
background:#f6f7f9;line-height:1.45}
header{background:#1f2a38;color:#fff;padding:14px 24px}header h1{margin:0;font-size:1.45em}
header a{color:#9cd0ff}nav{font-size:.95em;margin-top:4px}nav a{margin-right:14px}
main{padding:8px 24px 40px;max-width:1700px}section{background:#fff;border:1px solid #dde1e6;border-radius:6px;
padding:10px 18px 14px;margin:16px 0}h2{font-size:1.2em;margin:6px 0 10px}h3{font-size:1.02em;margin:14px 0 6px}
table{border-collapse:collapse;font-size:.92em}th,td{padding:3px 10px;border-bottom:1px solid #e6e9ed;text-align:left;
vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.scroll{overflow-x:auto}th{background:#f0f2f5}
figure{margin:10px 0 22px}figure img{width:100%;height:auto;background:#000;border-radius:3px}
figcaption{font-size:.92em;color:#444;margin-top:4px}.ok{color:#18794e}.bad{color:#c62828;font-weight:600}
.muted{color:#6b7280}.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85em;
background:#e6f4ea;color:#18794e}.tag.bad{background:#fdecea;color:#c62828}code{font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:0 28px}
.strip{margin:4px 0 14px}.strip svg{width:100%;height:auto}td:first-child{white-space:nowrap}
.strip circle{fill:#2f6db5;fill-opacity:.6}
.strip circle.out{fill:#d62728;fill-opacity:.95}.strip a:hover circle{fill:#ff9900;fill-opacity:1}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def fmt(v, unit: str = "") -> str:
    """A number for display; None/NaN -> n/a."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    a = abs(v)
    s = f"{v:.0f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"
    return f"{s} {unit}".strip() if unit and unit != "corr." else s


def visit_name(participant_id: str, session_id: str | None) -> str:
    return participant_id + (f"_{session_id}" if session_id and session_id != "n/a" else "")


def _page(title: str, nav: list[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="{_e(h)}">{_e(t)}</a>' for t, h in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{_e(title)}</h1><nav>{links}</nav></header>"
            f"<main>{body}</main></body></html>\n")


def _rel(path: str, start_dir: str) -> str:
    return os.path.relpath(path, start_dir).replace(os.sep, "/")


# ---- provenance and status --------------------------------------------------------------------
def read_sidecars(paths) -> list[dict]:
    recs = []
    for p in sorted(set(paths)):
        try:
            with open(p) as f:
                rec = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("Step"):
            rec["_file"] = p
            recs.append(rec)
    return recs


def visit_sidecars(output_dir: str, participant_id: str, session_id: str | None) -> list[str]:
    """The provenance sidecars of one visit's outputs (``<visit>_*.json`` in its datatype folders)."""
    import glob

    name = visit_name(participant_id, session_id)
    folder = os.path.join(output_dir, participant_id,
                          *([session_id] if session_id and session_id != "n/a" else []))
    return sorted(glob.glob(os.path.join(glob.escape(folder), "*", glob.escape(name) + "_*.json")))


def _versions_text(rec: dict) -> str:
    if rec.get("ToolVersion"):
        return str(rec["ToolVersion"]).strip()
    vers = rec.get("Versions") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(vers.items()))


def methods_rows(records: list[dict]) -> list[dict]:
    """One row per (step, method): the tool versions and the sidecars that record it."""
    rows: dict = {}
    for r in records:
        key = (r.get("Step"), r.get("Method"))
        row = rows.setdefault(key, {"step": key[0], "method": key[1], "versions": [], "files": []})
        v = _versions_text(r)
        if v and v not in row["versions"]:
            row["versions"].append(v)
        row["files"].append(r["_file"])
    return sorted(rows.values(), key=lambda r: (str(r["step"]), str(r["method"])))


def _without_qc_stages(df):
    """The status rows of the processing stages: the QC rules' own rows are left out, since the
    pages are built while those jobs run (a running job's log has no benchmark record yet, which
    the status reads as failed); neurosmk-status reports them."""
    return df[~df["stage"].astype(str).str.startswith("qc")]


def visit_status(output_dir: str, participant_id: str, session_id: str | None):
    """This visit's rows of ``neurosmk.status.collect`` (dicts), or None when the status module is
    not available or fails."""
    try:
        from neurosmk.status import collect
    except ImportError:
        return None
    try:
        df = _without_qc_stages(collect(output_dir, run_logs=False))
    except Exception as exc:  # noqa: BLE001 - the page still shows everything else
        return [{"stage": "status", "state": "failed", "error": f"status not available: {exc}", "log": ""}]
    pid_col = "participant_id" if "participant_id" in df.columns else "subject"
    sub = df[df[pid_col].astype(str).isin({participant_id, participant_id.removeprefix("sub-")})]
    if session_id and session_id != "n/a" and "session_id" in sub.columns:
        sub = sub[sub["session_id"].astype(str).isin({session_id, session_id.removeprefix("ses-")})]
    return sub.to_dict("records")


def failed_counts(output_dir: str) -> dict | None:
    """(participant_id, session_id) -> number of failed steps, from one ``neurosmk.status.collect``
    call; None when the status module is not available."""
    try:
        from neurosmk.status import collect
    except ImportError:
        return None
    try:
        df = _without_qc_stages(collect(output_dir))
    except Exception:  # noqa: BLE001 - the group page goes on without status
        return None
    pid_col = "participant_id" if "participant_id" in df.columns else "subject"
    counts: dict = {}
    for row in df[df["state"].astype(str) == "failed"].to_dict("records"):
        pid = str(row[pid_col])
        pid = pid if pid.startswith("sub-") else f"sub-{pid}"
        ses = str(row.get("session_id") or "n/a")
        ses = ses if ses in ("n/a", "") or ses.startswith("ses-") else f"ses-{ses}"
        key = (pid, ses or "n/a")
        counts[key] = counts.get(key, 0) + 1
    return counts


def _first_line(text) -> str:
    for line in str(text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


# ---- subject page -----------------------------------------------------------------------------
def _markdown(md: str) -> str:
    """The methods paragraph's small Markdown subset (headings, emphasis, numbered refs)."""
    out, items = [], []
    for line in md.splitlines():
        text = _e(line)
        text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
        if re.match(r"^\d+\. ", line):
            items.append(f"<li>{text.split('. ', 1)[1]}</li>")
            continue
        if items:
            out.append("<ol>" + "".join(items) + "</ol>")
            items = []
        if line.startswith("## "):
            out.append(f"<h3>{text[3:]}</h3>")
        elif line.startswith("# ") or not line.strip():
            continue
        else:
            out.append(f"<p>{text}</p>")
    if items:
        out.append("<ol>" + "".join(items) + "</ol>")
    return "".join(out)


def subject_page(out_html: str, metrics_json: str, figures: list[tuple[str, str, str]],
                 sidecar_files: list[str], group_page: str | None = None,
                 status_rows: list[dict] | None = None, configured_methods: dict | None = None) -> str:
    """Write one visit's QC page. ``figures``: (title, png path, caption). Returns the HTML."""
    from .provenance import methods_text

    rec = read_visit_metrics(metrics_json)
    pid, ses = rec["participant_id"], rec.get("session_id", "n/a")
    name = visit_name(pid, ses)
    here = os.path.dirname(os.path.abspath(out_html))
    nav = [("Group QC page", _rel(group_page, here))] if group_page else []
    nav += [(t, f"#fig-{i}") for i, (t, _, _) in enumerate(figures)]
    nav += [("Numbers", "#numbers"), ("Methods", "#methods"), ("Status", "#status")]
    parts = []

    # status first: a reviewer wants to know at once whether something failed
    if status_rows is None:
        status = '<p class="muted">status not available (neurosmk.status is not installed)</p>'
        badge = ""
    else:
        failed = [r for r in status_rows if str(r.get("state")) == "failed"]
        counts: dict = {}
        for r in status_rows:  # 'not run' left out: steps that do not apply to this visit's data, too
            if str(r.get("state")) in ("done", "failed"):
                counts[str(r.get("state"))] = counts.get(str(r.get("state")), 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no steps recorded"
        badge = (f'<span class="tag bad">{len(failed)} failed step{"s" if len(failed) != 1 else ""}</span>'
                 if failed else '<span class="tag">no failed steps</span>')
        status = f"<p>{badge} <span class=\"muted\">{_e(summary)}</span></p>"
        if failed:
            rows = "".join(
                f"<tr><td>{_e(r.get('stage', ''))}</td><td class=\"bad\">{_e(_first_line(r.get('error')))}</td>"
                + (f"<td><a href=\"{_e(_rel(str(r['log']), here))}\">log</a></td>" if r.get("log") else "<td></td>")
                + "</tr>" for r in failed)
            status += f"<table><tr><th>step</th><th>first error line</th><th>log</th></tr>{rows}</table>"
    parts.append(f'<section id="status"><h2>Status</h2>{status}</section>')

    m = rec["metrics"]
    rows = "".join(f"<tr><td>{_e(label)}</td><td class=\"num\">{_e(fmt(m.get(k), unit))}</td></tr>"
                   for k, (label, unit, _) in METRICS.items() if m.get(k) is not None)
    missing = [label for k, (label, _, _) in METRICS.items() if m.get(k) is None]
    note = (f'<p class="muted">n/a for this visit: {_e(", ".join(missing))}</p>' if missing else "")
    parts.append(f'<section id="numbers"><h2>Key numbers</h2><table>{rows}</table>{note}'
                 f'<p class="muted">From <a href="{_e(_rel(metrics_json, here))}">'
                 f'{_e(os.path.basename(metrics_json))}</a>.</p></section>')

    figs = []
    for i, (title, png, caption) in enumerate(figures):
        src = _rel(png, here)
        figs.append(f'<figure id="fig-{i}"><h3>{_e(title)}</h3><a href="{_e(src)}"><img src="{_e(src)}" '
                    f'alt="{_e(name + ": " + title)}"></a><figcaption>{_e(caption)}</figcaption>'
                    "</figure>")
    if not figs:
        figs = ['<p class="muted">no figures for this visit</p>']
    parts.insert(2, '<section id="figures"><h2>Figures</h2>' + "".join(figs) + "</section>")

    records = read_sidecars(sidecar_files)
    mrows = "".join(
        f"<tr><td><code>{_e(r['step'])}</code></td><td>{_e(r['method'])}</td>"
        f"<td>{_e('; '.join(r['versions']) or 'not recorded')}</td><td>"
        + " ".join(f'<a href="{_e(_rel(f, here))}">{_e(os.path.basename(f))}</a>' for f in r["files"][:3])
        + (f" (+{len(r['files']) - 3})" if len(r["files"]) > 3 else "") + "</td></tr>"
        for r in methods_rows(records))
    methods = configured_methods or {r.get("Step"): r.get("Method") for r in records}
    paragraph = _markdown(methods_text(records, methods)) if records else ""
    parts.append('<section id="methods"><h2>Methods and versions</h2>'
                 + (f"<table><tr><th>step</th><th>method</th><th>versions</th><th>provenance</th></tr>{mrows}"
                    "</table>" if mrows else '<p class="muted">no provenance sidecars found</p>')
                 + paragraph + "</section>")
    text = _page(f"neurosmk QC: {name}", nav, "".join(parts))
    write_text(out_html, text)
    return text


# ---- group page -------------------------------------------------------------------------------
def robust_z(values: list) -> list:
    """Modified z-scores 0.6745 (x - median) / MAD; None where x is missing or the MAD is zero or
    fewer than 3 values exist."""
    import statistics

    ok = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(ok) < 3:
        return [None] * len(values)
    med = statistics.median(ok)
    mad = statistics.median([abs(v - med) for v in ok])
    if mad == 0:
        return [None] * len(values)
    return [None if v is None or not math.isfinite(float(v)) else 0.6745 * (float(v) - med) / mad
            for v in values]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def strip_svg(points: list[tuple[str, float, float | None, str]], unit: str = "", width: int = 720,
              height: int = 84) -> str:
    """Strip plot, every visit a dot linked to its page. points: (name, value, z, href)."""
    vals = [p[1] for p in points]
    lo, hi = min(vals), max(vals)
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    pad = 0.04 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    left, right, top, bottom = 12, width - 12, 8, height - 24

    def sx(v):
        return left + (v - lo) / (hi - lo) * (right - left)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img">',
           f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#999"/>']
    for t in _ticks(lo, hi):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#999"/>'
                   f'<text x="{x:.1f}" y="{height - 6}" font-size="11" text-anchor="middle" fill="#555">'
                   f"{t:g}</text>")
    ordered, h = sorted(vals), len(vals) // 2
    med = ordered[h] if len(vals) % 2 else (ordered[h - 1] + ordered[h]) / 2
    out.append(f'<line x1="{sx(med):.1f}" x2="{sx(med):.1f}" y1="{top}" y2="{bottom}" stroke="#555" '
               'stroke-dasharray="3,3"><title>median</title></line>')
    span = bottom - top - 10
    for i, (name, v, z, href) in enumerate(points):
        y = top + 5 + ((i * 0.6180339887) % 1.0) * span  # deterministic jitter
        cls = ' class="out"' if z is not None and abs(z) > Z_THRESHOLD else ""
        ztxt = "n/a" if z is None else f"{z:+.1f}"
        out.append(f'<a href="{_e(href)}"><circle cx="{sx(v):.1f}" cy="{y:.1f}" r="{4 if cls else 3}"{cls}>'
                   f"<title>{_e(name)}: {_e(fmt(v, unit))} (z {ztxt})</title></circle></a>")
    out.append("</svg>")
    return "".join(out)


def group_table(records: list[dict]) -> dict:
    """Columns (lists, one entry per visit, sorted): participant_id, session_id, each metric (None
    when missing) and its robust z-score (``<metric>_z``)."""
    recs = sorted(records, key=lambda r: (r["participant_id"], r.get("session_id") or "n/a"))
    cols: dict = {"participant_id": [r["participant_id"] for r in recs],
                  "session_id": [r.get("session_id") or "n/a" for r in recs]}
    for k in METRICS:
        vals = [r["metrics"].get(k) for r in recs]
        cols[k] = [None if v is None or not math.isfinite(float(v)) else float(v) for v in vals]
    for k in METRICS:
        cols[f"{k}_z"] = robust_z(cols[k])
    return cols


def _tsv_value(v) -> str:
    return "n/a" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def group_page(out_html: str, visits: list[tuple[str, str]], out_tsv: str | None = None,
               report_html: str | None = None, failed: dict | None = None) -> str:
    """Write the group QC page from (metrics JSON, visit page) pairs; optionally the table as TSV
    (n/a for missing values). ``failed``: (participant_id, session_id) -> failed steps
    (:func:`failed_counts`; None: no status column). Returns the HTML."""
    here = os.path.dirname(os.path.abspath(out_html))
    records, pages = [], {}
    for metrics_json, page in visits:
        rec = read_visit_metrics(metrics_json)
        records.append(rec)
        pages[(rec["participant_id"], rec.get("session_id") or "n/a")] = _rel(page, here)
    cols = group_table(records)
    if out_tsv:
        names_ = list(cols)
        lines = ["\t".join(names_)] + ["\t".join(_tsv_value(cols[c][i]) for c in names_)
                                       for i in range(len(cols["participant_id"]))]
        write_text(out_tsv, "\n".join(lines) + "\n")
    names = [visit_name(p, s) for p, s in zip(cols["participant_id"], cols["session_id"])]
    hrefs = [pages[(p, s)] for p, s in zip(cols["participant_id"], cols["session_id"])]

    def is_out(z):
        return z is not None and abs(z) > Z_THRESHOLD

    outliers = []
    plots = []
    for k, (label, unit, _) in METRICS.items():
        pts = [(n, v, z, h) for n, v, z, h in zip(names, cols[k], cols[f"{k}_z"], hrefs) if v is not None]
        outliers += [(n, h, label, fmt(v, unit), z) for n, v, z, h in pts if is_out(z)]
        if not pts:
            continue
        n_na = len(names) - len(pts)
        plots.append(f'<div class="strip" id="m-{k}"><h3>{_e(label)}'
                     + (f" ({_e(unit)})" if unit and unit != "corr." else "")
                     + f' <span class="muted">n = {len(pts)}' + (f", n/a: {n_na}" if n_na else "")
                     + "</span></h3>" + strip_svg(pts, unit) + "</div>")

    if outliers:
        orows = "".join(f'<tr><td><a href="{_e(h)}">{_e(n)}</a></td><td>{_e(lab)}</td>'
                        f'<td class="num">{_e(v)}</td><td class="num bad">{z:+.1f}</td></tr>'
                        for n, h, lab, v, z in sorted(outliers, key=lambda o: (-abs(o[4]), o[0])))
        otext = f"<table><tr><th>visit</th><th>measure</th><th>value</th><th>robust z</th></tr>{orows}</table>"
    else:
        otext = "<p>No visit has a measure with |robust z| above the threshold.</p>"
    outlier_names = {o[0] for o in outliers}
    shown = [k for k in METRICS if any(v is not None for v in cols[k])]
    def _th(k):
        name, unit = METRICS[k][:2]
        return f"<th>{_e(name)}" + (f" ({_e(unit)})" if unit not in ("", "corr.") else "") + "</th>"

    head = "".join(_th(k) for k in shown)
    irows = []
    for i, (n, h) in enumerate(zip(names, hrefs)):
        cells = "".join(f'<td class="num{" bad" if is_out(cols[f"{k}_z"][i]) else ""}">'
                        f"{_e(fmt(cols[k][i]))}</td>" for k in shown)
        flag = ' <span class="tag bad">outlier</span>' if n in outlier_names else ""
        if failed is not None:
            nf = failed.get((cols["participant_id"][i], cols["session_id"][i]), 0)
            cells = (f'<td class="bad">{nf} failed</td>' if nf else '<td class="ok">ok</td>') + cells
        irows.append(f'<tr><td><a href="{_e(h)}">{_e(n)}</a>{flag}</td>{cells}</tr>')
    nav = [("Outliers", "#outliers"), ("Distributions", "#distributions"), ("Subjects", "#subjects")]
    if report_html:
        nav.append(("Snakemake report", _rel(report_html, here)))
    body = (f'<section><p>{len(names)} visit{"s" if len(names) != 1 else ""}. Every dot is a visit; '
            "click it to open its page. Outliers: |robust z| &gt; "
            f"{Z_THRESHOLD} with z = 0.6745 (x &minus; median) / MAD over the visits that have the measure "
            "(n/a with fewer than 3 values or a zero MAD).</p></section>"
            f'<section id="outliers"><h2>Outliers ({len(outliers)})</h2>{otext}</section>'
            '<section id="distributions"><h2>Distributions</h2><div class="grid">'
            f'{"".join(plots) or "<p>no numbers</p>"}'
            "</div></section>"
            f'<section id="subjects"><h2>Subjects</h2><div class="scroll"><table><tr><th>visit</th>'
            + ("<th>status</th>" if failed is not None else "") + f'{head}</tr>'
            f'{"".join(irows)}</table></div></section>')
    text = _page("neurosmk QC: group", nav, body)
    write_text(out_html, text)
    return text
