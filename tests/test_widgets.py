"""Widgets drive the package and show its results (no kernel needed)."""
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.search.searcher import Searcher
from fclip_workbench.embedding.store import EmbeddingStore
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


def test_search_box_shows_errors_in_the_widget(tiny_model, small_catalog_dir, tmp_path):
    """A refused search (here: the searcher raises a user error) is shown in the box, not lost in a callback."""
    from fclip_workbench.errors import FclipError

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    searcher = Searcher.build(tiny_model, cat, store=EmbeddingStore(tmp_path / "s.sqlite"), progress=False)

    def refuse(query, k=10):
        raise FclipError(f"cannot search for {query!r} right now")

    searcher.by_text = refuse
    box = SearchBox(searcher, query="red shirt", k=3)  # used to raise out of the constructor / observer
    assert box.out.outputs[0]["name"] == "stderr"
    assert "cannot search for 'red shirt'" in box.out.outputs[0]["text"]
    box.query.value = "blue bag"
    assert "'blue bag'" in box.out.outputs[0]["text"]
