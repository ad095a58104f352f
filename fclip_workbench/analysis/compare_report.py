"""Draw a `CompareReport`: Markdown, Plotly figures, and one offline HTML page with small JPEG thumbnails.

The HTML page needs no network: plotly.js is inlined (`plotlyjs="inline"`, about 4.6 MB) or written once
beside the page (`plotlyjs="directory"`: `plotly.min.js` in the same folder, the default).

Example:
    >>> paths = write_report(report, "results/compare-v1-v2")       # doctest: +SKIP
    >>> sorted(p.name for p in paths)                                # doctest: +SKIP
    ['report.html', 'report.md', 'summary.csv']
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fclip_workbench.analysis.compare import CompareReport, flipped_predictions, flipped_queries
from fclip_workbench.errors import FclipError

THUMB_PX = 48  # longest side of a thumbnail
CONFUSION_CLASSES = 20  # most frequent true classes drawn in a confusion matrix
PLOTLYJS = ("directory", "inline")


def _fmt(v: object) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(t: pd.DataFrame, signed: tuple[str, ...] = ("delta", "lo", "hi")) -> str:
    """A DataFrame as a Markdown table (floats to 3 decimals, deltas signed)."""
    if t is None or t.empty:
        return "(none)\n"
    head = "| " + " | ".join(map(str, t.columns)) + " |\n|" + "---|" * len(t.columns) + "\n"
    lines = []
    for row in t.itertuples(index=False):
        cells = [f"{v:+.3f}" if c in signed and isinstance(v, (float, np.floating)) else _fmt(v)
                 for c, v in zip(t.columns, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def to_markdown(report: CompareReport, thumbs: dict[str, str] | None = None) -> str:
    """The whole report as Markdown (thumbnails as image links when `thumbs` maps item ids to files)."""
    a, b = report.models
    thumbs = thumbs or {}
    out = [f"# {a} (A) against {b} (B) on {report.data}\n",
           f"Scored: **{report.n_scored:,} products** held out from both models ({report.split.describe()}); "
           f"refused from that split because A or B trained on them: **{report.n_refused:,}**; products of "
           f"the catalog either model trained on (never scored): {report.n_trained:,}. Intervals: paired bootstrap "
           f"over products, 95 %. Fingerprints: A {report.fingerprints[0]}, B {report.fingerprints[1]}.\n"]
    out += [f"- note: {n}\n" for n in report.notes]
    out.append("\n## What changed (significant differences, largest first)\n")
    out += [f"- {f}\n" for f in report.findings()] or ["- none\n"]
    out.append("\n## Headline figures\n")
    out.append(md_table(report.summary()))
    for fld, res in report.fields.items():
        per = res.per_class
        out.append(f"\n## {fld}: F1 per class (20 largest classes; {len(per)} in all in summary.csv)\n")
        out.append(md_table(per.head(20)))
    if report.slices is not None and not report.slices.empty:
        out.append("\n## Slices\n")
        out.append(md_table(report.slices))
    first = next(iter(report.fields.values()))
    flips, n_fixed, n_broken = flipped_predictions(first)
    out.append(f"\n## Predictions that flipped ({first.field}): {n_fixed} fixed by B, {n_broken} broken by B\n")
    out.append(md_table(_with_thumbs(flips, thumbs)))
    if report.queries is not None:
        fq, n_f, n_b = flipped_queries(report.queries)
        out.append(f"\n## Retrievals that flipped (product in the top 10): {n_f} found by B only, {n_b} by A only\n")
        fq = fq.assign(top_a=fq.top_a.map(lambda ids: " ".join(_img(i, thumbs) for i in ids)),
                       top_b=fq.top_b.map(lambda ids: " ".join(_img(i, thumbs) for i in ids)))
        out.append(md_table(_with_thumbs(fq[["item_id", "text", "rank_a", "rank_b", "flip", "top_a", "top_b"]],
                                         thumbs)))
    if report.crossdomain is not None:
        out.append("\n## Cross-domain: CCP garment crops retrieve KAGL packshots (P@10 by CCP label)\n")
        out.append(md_table(report.crossdomain))
    out.append("\n## Time (s)\n" + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()) + "\n")
    return "".join(out)


def _img(item_id: str, thumbs: dict[str, str]) -> str:
    return f"![{item_id}]({thumbs[item_id]})" if item_id in thumbs else str(item_id)


def _with_thumbs(t: pd.DataFrame, thumbs: dict[str, str]) -> pd.DataFrame:
    return t.assign(image=t.item_id.map(lambda i: _img(i, thumbs)))


# ------------------------------------------------------------------ figures
def f1_figure(report: CompareReport) -> go.Figure:
    """Headline figures of A and B with the interval of B - A drawn on B."""
    t = report.summary()
    labels = [f"{s}: {m}" for s, m in zip(t.section, t.metric)]
    fig = go.Figure([go.Bar(name=report.models[0], x=labels, y=t.A),
                     go.Bar(name=report.models[1], x=labels, y=t.B,
                            error_y={"type": "data", "symmetric": False, "array": t.hi - t.delta,
                                     "arrayminus": t.delta - t.lo})])
    return fig.update_layout(barmode="group", title="A and B (error bar: 95 % interval of B - A, drawn on B)",
                             height=420)


def per_class_figure(report: CompareReport, field: str, top: int = 30) -> go.Figure:
    """B - A of F1 per class, with intervals, for the `top` largest classes."""
    per = report.fields[field].per_class.head(top)
    fig = go.Figure(go.Bar(x=per["class"], y=per.delta, error_y={"type": "data", "symmetric": False,
                                                                 "array": per.hi - per.delta,
                                                                 "arrayminus": per.delta - per.lo},
                           hovertext=[f"n={n}, A {x:.2f}, B {y:.2f}" for n, x, y in zip(per.n, per.A, per.B)]))
    return fig.update_layout(title=f"{field}: F1 per class, B - A (95 % interval)", height=380)


def confusion(report: CompareReport, field: str, which: int, top: int = CONFUSION_CLASSES
              ) -> tuple[list[str], np.ndarray, dict[tuple[str, str], list[str]]]:
    """(classes, (L, L) counts true x predicted, (true, predicted) -> item ids) over the `top` true classes."""
    res = report.fields[field]
    pred = (res.pred_a, res.pred_b)[which]
    classes = list(pd.Series(res.truth).value_counts().index[:top])
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)  # (L, L)
    cells: dict[tuple[str, str], list[str]] = {}
    for item_id, t, p in zip(res.ids, res.truth, pred):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
            cells.setdefault((t, p), []).append(item_id)
    return classes, counts, cells


def confusion_figure(report: CompareReport, field: str, which: int,
                     matrix: tuple[list[str], np.ndarray] | None = None) -> go.Figure:
    """The heatmap of `confusion(report, field, which)`, or of `matrix` (classes, counts) already computed."""
    classes, counts = matrix if matrix is not None else confusion(report, field, which)[:2]
    fig = go.Figure(go.Heatmap(z=counts, x=classes, y=classes, colorscale="Blues",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} products<extra></extra>"))
    return fig.update_layout(title=f"{report.models[which]}: {field} confusion (rows: true)", height=520,
                             xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")


def slices_figure(report: CompareReport) -> go.Figure:
    t = report.slices if report.slices is not None else pd.DataFrame(
        columns=["slice", "value", "metric", "delta", "lo", "hi"])
    labels = [f"{s}={v} ({m})" for s, v, m in zip(t.slice, t.value, t.metric)]
    fig = go.Figure(go.Bar(x=t.delta, y=labels, orientation="h",
                           error_x={"type": "data", "symmetric": False, "array": t.hi - t.delta,
                                    "arrayminus": t.delta - t.lo}))
    return fig.update_layout(title="B - A per slice (95 % interval)", height=max(300, 22 * len(t)))


def figures(report: CompareReport) -> dict[str, go.Figure]:
    """Every figure of the report by name."""
    first = next(iter(report.fields))
    figs = {"headline": f1_figure(report)}
    figs.update({f"per-class {f}": per_class_figure(report, f) for f in report.fields})
    figs["confusion A"] = confusion_figure(report, first, 0)
    figs["confusion B"] = confusion_figure(report, first, 1)
    if report.slices is not None and not report.slices.empty:
        figs["slices"] = slices_figure(report)
    return figs


# ------------------------------------------------------------------ files
def write_thumbnails(report: CompareReport, folder: Path, ids: set[str]) -> dict[str, str]:
    """Small JPEGs of `ids` in `folder`; item id -> path relative to the report."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, item_id in enumerate(sorted(ids)):
        img = report.crop_images.get(item_id)
        if img is None and item_id in report.images:
            try:
                img = Image.open(report.images[item_id])
            except OSError:
                continue
        if img is None:
            continue
        img = img.convert("RGB")
        img.thumbnail((THUMB_PX, THUMB_PX))
        name = f"t{k:04d}.jpg"
        img.save(folder / name, quality=70)
        out[item_id] = f"{folder.name}/{name}"
    return out


def _thumb_ids(report: CompareReport) -> set[str]:
    first = next(iter(report.fields.values()))
    ids = set(flipped_predictions(first)[0].item_id)
    if report.queries is not None:
        fq = flipped_queries(report.queries)[0]
        ids |= set(fq.item_id) | {i for row in fq.top_a for i in row} | {i for row in fq.top_b for i in row}
    return ids


def write_report(report: CompareReport, out: str | Path, plotlyjs: str = "directory") -> list[Path]:
    """report.md, report.html (offline), summary.csv (+ per-class and slice CSVs) and thumbs/ in `out`."""
    if plotlyjs not in PLOTLYJS:
        raise FclipError(f"plotlyjs must be one of {PLOTLYJS}, got {plotlyjs!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    thumbs = write_thumbnails(report, out / "thumbs", _thumb_ids(report))
    md = to_markdown(report, thumbs)
    (out / "report.md").write_text(md, encoding="utf-8")
    report.summary().to_csv(out / "summary.csv", index=False)
    pd.concat([r.per_class.assign(field=f) for f, r in report.fields.items()]).to_csv(out / "per_class.csv",
                                                                                        index=False)
    if report.slices is not None:
        report.slices.to_csv(out / "slices.csv", index=False)
    parts = []
    for k, (name, fig) in enumerate(figures(report).items()):
        include: bool | str = (True if plotlyjs == "inline" else "directory") if k == 0 else False
        parts.append(f"<h2>{html.escape(name)}</h2>" + fig.to_html(full_html=False, include_plotlyjs=include))
    if plotlyjs == "directory":
        from plotly.offline import get_plotlyjs

        (out / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>compare</title></head><body>"
            + "".join(parts) + "<hr>" + _md_to_html(md) + "</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    return [out / "report.html", out / "report.md", out / "summary.csv"]


def _md_to_html(md: str) -> str:
    try:
        import markdown
    except ImportError:
        return f"<pre>{html.escape(md)}</pre>"
    return markdown.markdown(md, extensions=["tables"])
