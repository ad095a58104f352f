"""The Explorer in a real JupyterLab + Chromium: the map renders, hovering shows the thumbnail, a
lasso drawn with shift+drag (the gesture the explorer's hint names) reaches `explorer.selection` in the kernel, `explorer.select(ids)` fills the grid,
and "Send to annotator (batch)" shows the lasso's products in the annotator's batch grid, where one
value applied (one product excluded by clicking its picture) lands as `batch` events in a real SQLite
label store.

The notebook's 13 products sit at known places: p0 at the centre, p1..p8 on a small ring around it,
p9..p12 in the far corners, so the centre of the canvas is p0 and a box around the centre holds
exactly p0..p8.
"""
from __future__ import annotations

import math
import re
import sqlite3

import nbformat
import numpy as np
import pytest

pytest.importorskip("playwright")
pytest.importorskip("jscatter")
from playwright.sync_api import expect  # noqa: E402
from tests.plugins.services import doc_screenshot  # noqa: E402

RING = [f"p{i}" for i in range(9)]  # centre + ring: what the lasso must select
EXCLUDED = "p4"  # clicked out of the batch in the grid
# a real AnnotationSession over a real SQLite store; vectors by garment and a real (zero-shot) Suggester
ANNOTATOR_CELL = """\
from fclip_workbench.labelling.annotate import AnnotationSession
from fclip_workbench.embedding.embed import EmbeddingResult
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.suggest import Suggester
from fclip_workbench.labelling.taxonomy import Taxonomy
from fclip_workbench.widgets import Annotator
vec = np.array([[1.0, 0.2, 0.1, 0.0] if g == 'shirt' else [0.2, 1.0, 0.0, 0.1] for g in cat.table['garment']],
               np.float32)
vec /= np.linalg.norm(vec, axis=1, keepdims=True)
session = AnnotationSession(cat, 'garment', LabelStore('labels.sqlite', catalog=cat),
                            Suggester(labels=['shirt', 'shoe'], text_weights=np.eye(2, 4, dtype=np.float32)),
                            EmbeddingResult(list(cat.ids), vec), annotator='lab-user', background=False,
                            taxonomy=Taxonomy.from_values('garment', ['shirt', 'shoe', 'bag']))
annotator = Annotator(session)
explorer.connect(annotator)
annotator"""


def write_lab_files(root) -> None:
    from PIL import Image

    (root / "images").mkdir()
    rows = ["item_id,image,text,garment"]
    xy = [(0.0, 0.0)] + [(0.3 * math.cos(a), 0.3 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)]
    xy += [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)]
    for i in range(13):
        Image.new("RGB", (60, 80), (20 * i, 255 - 15 * i, 90)).save(root / "images" / f"p{i}.jpg")
        garment = "shirt" if i < 9 else "shoe"
        rows.append(f"p{i},p{i}.jpg,product {i} {garment},{garment}")
    (root / "products.csv").write_text("\n".join(rows) + "\n")
    np.save(root / "xy.npy", np.array(xy, dtype=np.float32))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import numpy as np\n"
            "from fclip_workbench.data.catalog import Catalog\n"
            "from fclip_workbench.widgets import Explorer\n"
            "cat = Catalog.from_csv('products.csv', image_root='images')\n"
            "explorer = Explorer(np.load('xy.npy'), cat.ids, catalog=cat, color_by='garment', height=420,\n"
            "                    point_size=14)\n"
            "explorer"),
        nbformat.v4.new_code_cell("explorer.select(['p9', 'p10', 'p11'])\nprint('PYSELECT', len(explorer.selection))"),
        nbformat.v4.new_code_cell("print('SELECTED=' + ','.join(explorer.selection['item_id']) + '.')"),
        nbformat.v4.new_code_cell(ANNOTATOR_CELL),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "explore.ipynb")


def run_all(page) -> None:
    """Run > Run All Cells once the kernel is idle; again if no cell started (a click before the kernel
    was connected is dropped)."""
    expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(timeout=90_000)
    first_prompt = page.locator(".jp-Cell .jp-InputPrompt").first
    for _ in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        try:
            expect(first_prompt).not_to_have_text(re.compile(r"^\[ \]:$"), timeout=15_000)
            return
        except AssertionError:
            page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start the notebook's cells")


def test_explorer_in_jupyterlab(jupyterlab, page):
    write_lab_files(jupyterlab.root)
    page.goto(jupyterlab.url_for("lab/tree/explore.ipynb"))
    # the kernel is up before running everything
    expect(page.locator(".jp-Notebook")).to_be_visible(timeout=90_000)
    run_all(page)

    # 1. the map renders (a WebGL canvas inside the output) and select() from Python filled the grid
    canvas = page.locator(".jp-OutputArea-output canvas").first
    expect(canvas).to_be_visible(timeout=90_000)
    expect(page.get_by_text("PYSELECT 3")).to_be_visible(timeout=60_000)
    grid = page.locator(".fclip-explorer .fclip-grid figure")
    expect(grid).to_have_count(3, timeout=30_000)
    expect(page.locator(".fclip-explorer .fclip-grid img")).to_have_count(3)
    expect(page.locator(".fclip-explorer").get_by_text("p9: product 9 shoe")).to_be_visible()

    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.wait_for_timeout(1000)  # let the first draw settle

    # 2. hovering the centre point shows its thumbnail (a data-URI background image) and title in the tooltip
    preview = page.locator(".fclip-explorer div[style*='data:image/png']")
    for dx, dy in [(0, 0), (1, 1), (-1, -1), (2, 0), (0, 2)]:
        page.mouse.move(cx + dx - 20, cy + dy - 20)
        page.mouse.move(cx + dx, cy + dy, steps=5)
        try:
            expect(preview).to_have_count(1, timeout=5_000)
            break
        except AssertionError:
            continue
    expect(preview).to_have_count(1)
    assert preview.evaluate("el => getComputedStyle(el).backgroundImage").startswith('url("data:image/png;base64,')
    assert preview.evaluate("el => { let t = el; while (t && t.style.opacity === '') t = t.parentElement;"
                            " return t ? t.style.opacity : null }") == "1"  # the tooltip is shown, not faded out
    expect(page.locator(".fclip-explorer").get_by_text("product 0 shirt")).to_be_visible()
    doc_screenshot(page, "map", ".fclip-explorer")

    # 3. the hint's gesture: hold Shift and drag a lasso around the centre (map in its default pan/zoom
    # mode, no toolbar button, no long press) reaches explorer.selection
    hw, hh = 0.6 * box["width"] / 2, 0.6 * box["height"] / 2
    corners = [(cx - hw, cy - hh), (cx + hw, cy - hh), (cx + hw, cy + hh), (cx - hw, cy + hh), (cx - hw, cy - hh + 4)]
    page.mouse.move(cx - hw - 30, cy - hh - 30)
    page.mouse.move(*corners[0], steps=4)
    page.keyboard.down("Shift")
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        for t in np.linspace(0, 1, 16)[1:]:  # lasso points are throttled by time: move like a hand does
            page.mouse.move(x0 + t * (x1 - x0), y0 + t * (y1 - y0))
            page.wait_for_timeout(20)
    page.mouse.up()
    page.keyboard.up("Shift")
    expect(grid).to_have_count(len(RING), timeout=30_000)  # the kernel saw it and redrew the grid
    page.locator(".jp-Cell").nth(2).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    expect(page.get_by_text("SELECTED=" + ",".join(RING) + ".")).to_be_visible(timeout=60_000)

    # 4. "Send to annotator (batch)": the lasso's products fill the annotator's batch grid
    page.locator(".fclip-explorer .fclip-send-batch").click()
    tiles = page.locator(".fclip-annotator .fclip-selection-tile")
    expect(tiles).to_have_count(len(RING), timeout=30_000)
    items = page.locator(".fclip-annotator .fclip-selection-item")
    expect(items).to_have_text(RING, timeout=30_000)  # in map order, each tile's checkbox named by its product
    expect(page.locator(".fclip-annotator .fclip-selection-image")).to_have_count(len(RING))
    expect(tiles.first).to_contain_text("model:")  # the suggestion, beside the (missing) current label
    expect(tiles.first).to_contain_text("unlabelled")

    # 5. pick one value, click one product's picture out, apply: batch events in the SQLite store
    page.locator(".fclip-annotator .fclip-selection-value select").select_option("shoe")
    apply = page.locator(".fclip-annotator .fclip-selection-apply")
    expect(apply).to_have_text(f"Apply 'shoe' to {len(RING)}", timeout=30_000)
    tiles.nth(RING.index(EXCLUDED)).locator(".fclip-selection-image").click()
    expect(apply).to_have_text(f"Apply 'shoe' to {len(RING) - 1}", timeout=30_000)
    expect(tiles.nth(RING.index(EXCLUDED))).to_contain_text("excluded")
    apply.click()
    expect(page.locator(".fclip-annotator .fclip-status")).to_contain_text(f"saved: {len(RING) - 1} labels",
                                                                          timeout=30_000)
    con = sqlite3.connect(jupyterlab.root / "labels.sqlite")
    try:
        rows = con.execute("SELECT item_id, new_value, source, annotator, batch_id FROM label_events").fetchall()
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    assert sorted(r[0] for r in rows) == [i for i in RING if i != EXCLUDED]
    assert {r[1:4] for r in rows} == {("shoe", "batch", "lab-user")} and len({r[4] for r in rows}) == 1
