"""Pure figure builders: HTML image grids, Plotly charts, metric tables. No widgets, no maths.

Example:
    >>> html = image_grid_html(["a.jpg"], ["red dress"])     # doctest: +SKIP
    >>> metrics_by_model({"before": before.table, "after": after.table})   # doctest: +SKIP
"""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from .images import ImageLoadError, load_rgb


GRID_CLASS = "fclip-grid"  # CSS class of every result grid (notebook tests look for it)


def thumbnail_data_uri(path: str | Path, size: int = 128) -> str | None:
    """A PNG data URI of the image scaled to fit `size` px, or None if it cannot be read."""
    try:
        img = load_rgb(path)
    except ImageLoadError:
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_bytes(path: str | Path | None, size: int | None = None) -> tuple[bytes, str] | None:
    """(bytes, "png" | "jpeg") of an image file for an `ipywidgets.Image`; None if it cannot be read.

    PNG and JPEG files are passed through as stored when no `size` is asked (fast: no decoding);
    other formats, or a `size`, are decoded and re-encoded as PNG scaled to fit `size` px.

    >>> image_bytes("missing.png") is None
    True
    """
    if path is None:
        return None
    path = Path(path)
    fmt = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(path.suffix.lower())
    if size is None and fmt is not None:
        try:
            return path.read_bytes(), fmt
        except OSError:
            return None
    try:
        img = load_rgb(path)
    except ImageLoadError:
        return None
    if size is not None:
        img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), "png"


def image_grid_html(paths: Sequence[str | Path], captions: Sequence[str], size: int = 128) -> str:
    """An HTML grid of thumbnails with captions (unreadable images shown as a grey box)."""
    cells = []
    for path, cap in zip(paths, captions):
        uri = thumbnail_data_uri(path, size)
        pic = (f'<img src="{uri}" style="max-width:{size}px;max-height:{size}px">' if uri else
               f'<div style="width:{size}px;height:{size}px;background:#ddd">unreadable</div>')
        cells.append(f'<figure style="margin:4px;width:{size + 16}px;text-align:center;font-size:11px">'
                     f'{pic}<figcaption>{html.escape(cap)}</figcaption></figure>')
    return f'<div class="{GRID_CLASS}" style="display:flex;flex-wrap:wrap">' + "".join(cells) + "</div>"


def search_results_html(catalog, hits) -> str:
    """Grid of a search result table (columns rank, item_id, score, text)."""
    paths = [catalog.image_path(catalog.row_of(i)) for i in hits["item_id"]]
    caps = [f"#{r} {s:.3f}\n{t}" for r, s, t in zip(hits["rank"], hits["score"], hits["text"])]
    return image_grid_html(paths, caps)


def loss_curve(step_losses: Sequence[float], title: str = "training loss"):
    """Plotly line chart of the loss per optimizer step."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(range(1, len(step_losses) + 1)), y=list(step_losses), mode="lines"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="contrastive loss", height=320)
    return fig


def _metric_column(task: str, metric: str) -> str:
    """Short column name: 'R@10' for retrieval, 'garment weighted F1' for 'zero-shot garment (8 classes)'."""
    if task == "text-to-image":
        return metric
    m = re.fullmatch(r"zero-shot (.+?) \(\d+ classes\)", task)
    return f"{m.group(1)} {metric}" if m else f"{task}: {metric}"


def metrics_by_model(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per model (the mapping's keys, in order), one column per metric, from evaluation tables.

    Each table has the columns task, metric, value (`EvalReport.table`).

    >>> t = pd.DataFrame({"task": ["text-to-image"], "metric": ["R@10"], "value": [0.5]})
    >>> metrics_by_model({"before": t, "after": t.assign(value=0.75)})
            R@10
    before  0.50
    after   0.75
    """
    rows = {}
    for label, table in tables.items():
        rows[label] = {_metric_column(t, m): float(v) for t, m, v in zip(table["task"], table["metric"], table["value"])}
    return pd.DataFrame.from_dict(rows, orient="index")
