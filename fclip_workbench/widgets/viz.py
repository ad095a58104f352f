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

from fclip_workbench.embedding.images import ImageLoadError, load_rgb


GRID_CLASS = "fclip-grid"  # CSS class of every result grid (notebook tests look for it)


def html_text(value: object) -> str:
    """`value` as text that HTML shows literally: the one escape for catalog, store and URL text in markup
    (ids, titles, column names, label values, annotator names, messages). Quotes too (safe in attributes).

    >>> html_text("<img src=x onerror=alert(1)>"), html_text(None), html_text(3.5)
    ('&lt;img src=x onerror=alert(1)&gt;', 'None', '3.5')
    """
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


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


def image_bytes(path: str | Path | None, size: int | None = None,
                max_raw: int = 256_000) -> tuple[bytes, str] | None:
    """(bytes, "png" | "jpeg") of an image file for an `ipywidgets.Image`; None if it cannot be read.

    PNG and JPEG files are passed through as stored (fast: no decoding; the browser scales them) when
    no `size` is asked or the file is under `max_raw` bytes; other formats, and larger files when a
    `size` is asked, are decoded and re-encoded as PNG scaled to fit `size` px.

    >>> image_bytes("missing.png") is None
    True
    """
    if path is None:
        return None
    path = Path(path)
    fmt = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(path.suffix.lower())
    try:
        small = path.stat().st_size < max_raw
    except OSError:
        return None
    if fmt is not None and (size is None or small):
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
                     f'{pic}<figcaption>{html_text(cap)}</figcaption></figure>')
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


def few_shot_figure(curve: pd.DataFrame, zero_shot: float | None = None, title: str = "few-shot linear probe"):
    """Plotly chart of `probe_eval.few_shot_curve` output: mean weighted F1 per k (error bars: std over seeds),
    with the zero-shot figure as a dashed line when given."""
    import plotly.graph_objects as go

    agg = curve.groupby("k").weighted_f1.agg(["mean", "std"]).fillna(0.0).reset_index()  # one row per k
    fig = go.Figure(go.Scatter(x=agg["k"].tolist(), y=agg["mean"].tolist(), mode="lines+markers",  # lists: plain JSON
                               name="linear probe", error_y={"type": "data", "array": agg["std"].tolist()}))
    if zero_shot is not None:
        fig.add_hline(y=zero_shot, line_dash="dash", annotation_text=f"zero-shot {zero_shot:.3f}")
    fig.update_layout(title=title, xaxis_title="labelled items per class (k)", yaxis_title="weighted F1",
                      xaxis_type="log", yaxis_range=[0, 1], height=360)
    return fig


# ------------------------------------------------------------------ grounding maps (drawing only; maps come from grounding.py)
def heatmap_rgb(map_, cmap: str = "jet"):
    """(H, W) float map -> (H, W, 3) uint8 colours, min-max scaled (a flat map is all low colour)."""
    import numpy as np
    from matplotlib import colormaps

    m = np.asarray(map_, np.float64)
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return (colormaps[cmap](m)[..., :3] * 255).astype(np.uint8)


def grounding_overlay(image, map_, alpha: float = 0.5, cmap: str = "jet"):
    """The photo with its grounding map blended on top (PIL image, the photo's size).

    >>> grounding_overlay(Image.new("RGB", (6, 4)), np.zeros((4, 6))).size     # doctest: +SKIP
    (6, 4)
    """
    import numpy as np
    from PIL import Image

    photo = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, np.float32)
    if photo.shape[:2] != np.shape(map_):
        raise ValueError(f"map {np.shape(map_)} and image {photo.shape[:2]} sizes differ")
    out = (1 - alpha) * photo + alpha * heatmap_rgb(map_, cmap).astype(np.float32)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def side_by_side(images: Sequence, titles: Sequence[str], height: int = 256, pad: int = 6):
    """One PIL image: the panels scaled to `height` px, left to right, each with its title above.

    Use it for one image x several methods, or several queries on one image.
    """
    from PIL import Image, ImageDraw

    if len(images) != len(titles):
        raise ValueError(f"{len(images)} panels but {len(titles)} titles")
    panels = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    title_h = 16
    sheet = Image.new("RGB", (sum(p.width for p in panels) + pad * (len(panels) + 1), height + title_h + 2 * pad),
                      "white")
    draw, x = ImageDraw.Draw(sheet), pad
    for panel, title in zip(panels, titles):
        draw.text((x, pad // 2), title[: max(4, panel.width // 6)], fill="black")
        sheet.paste(panel, (x, pad + title_h))
        x += panel.width + pad
    return sheet


def mask_outline(panel, mask, colour: tuple[int, int, int] = (255, 255, 255)):
    """`panel` (PIL, the mask's size) with the (H, W) bool mask's outline drawn on it, 1 px wide.

    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True                       # doctest: +SKIP
    >>> np.asarray(mask_outline(Image.new("RGB", (5, 5)), m))[2, 2].tolist()  # doctest: +SKIP
    [0, 0, 0]
    """
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    mask = np.asarray(mask, bool)                         # (H, W)
    edge = mask & ~ndimage.binary_erosion(mask)           # pixels of the mask with a neighbour outside
    out = np.asarray(panel.convert("RGB")).copy()         # (H, W, 3)
    out[edge] = colour
    return Image.fromarray(out)


def grounding_html(image, maps: Mapping[str, object], captions: Mapping[str, str] | None = None,
                   height: int = 220, alpha: float = 0.5, outlines: Mapping[str, object] | None = None) -> str:
    """HTML row of overlays, one per map (key = panel title), with optional captions (e.g. the time) and
    optional garment masks (same keys, (H, W) bool) drawn as outlines on their panels."""
    cells = []
    for title, map_ in maps.items():
        panel = grounding_overlay(image, map_, alpha)
        if outlines and title in outlines:
            panel = mask_outline(panel, outlines[title])
        panel = panel.resize((max(1, round(panel.width * height / panel.height)), height),
                             0 if outlines else 3)  # outlines stay crisp: nearest, else bicubic
        buf = io.BytesIO()
        panel.save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        cap = html_text(title) + (f"<br>{html_text(captions[title])}" if captions and title in captions else "")
        cells.append(f'<figure style="margin:4px;text-align:center;font-size:11px"><img src="{uri}">'
                     f"<figcaption>{cap}</figcaption></figure>")
    return '<div class="fclip-grounding" style="display:flex;flex-wrap:wrap">' + "".join(cells) + "</div>"
