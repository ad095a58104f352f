"""Widgets drive the package and show its results (no kernel needed)."""
from fclip_workbench.catalog import Catalog
from fclip_workbench.search import Searcher
from fclip_workbench.store import EmbeddingStore
from fclip_workbench.widgets import SearchBox


def test_search_box_shows_a_grid_and_updates(tiny_model, small_catalog_dir, tmp_path):
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    searcher = Searcher.build(tiny_model, cat, store=EmbeddingStore(tmp_path / "s.sqlite"), progress=False)
    box = SearchBox(searcher, query="red shirt", k=3)
    html = box.out.outputs[0]["data"]["text/html"]
    assert html.count("<figure") == 3 and "data:image/png;base64" in html
    box.k.value = 5
    box.query.value = "blue bag"  # typing a new query re-runs the search
    assert box.out.outputs[0]["data"]["text/html"].count("<figure") == 5
    box.query.value = " "
    assert box.out.outputs[0]["text"].startswith("Type a query")
