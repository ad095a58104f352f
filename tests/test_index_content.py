"""A saved index is bound to the products its vectors came from (issue 17 item 1): another catalog that reuses
its ids for other images or titles is refused in one line naming how many ids differ and one of them; ids
swapped or edited in index.json are caught; format-2 folders (no content digests) are refused."""
from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from fclip_workbench import cli
from fclip_workbench.embedding import store as store_module
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import InvalidArgumentError, SavedIndexError
from fclip_workbench.search.index import build_index
from fclip_workbench.search.saved import INDEX_FORMAT, load_index, save_index
from fclip_workbench.search.searcher import Searcher, item_contents
from fclip_workbench.embedding.store import EmbeddingStore


def shifted(src, out, column: str, by: int = 7):
    """A copy of the catalog at `src` with the same ids, `column` rotated by `by` rows (same image folder)."""
    df = pd.read_csv(src / "products.csv")
    df[column] = df[column].tolist()[by:] + df[column].tolist()[:by]
    out.mkdir()
    df.to_csv(out / "products.csv", index=False)
    return Catalog.from_csv(out / "products.csv", image_root=src / "images")


@pytest.fixture
def catalog(small_catalog_dir):
    return Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")


@pytest.fixture
def store(tmp_path):
    return EmbeddingStore(tmp_path / "s.sqlite")


def saved(tiny_model, catalog, store, folder, **kw):
    return save_index(Searcher.build(tiny_model, catalog, store=store, progress=False, **kw).index, folder)


def meta_of(folder):
    return json.loads((folder / "index.json").read_text())


def test_index_records_a_digest_per_id_and_the_same_catalog_passes(tiny_model, catalog, store, tmp_path):
    folder = saved(tiny_model, catalog, store, tmp_path / "v1")
    meta = meta_of(folder)
    assert meta["format"] == INDEX_FORMAT == 3
    assert len(meta["content"]) == len(meta["ids"]) == 12 and len(set(meta["content"])) == 12
    index = load_index(folder)
    assert index.content == item_contents(catalog, index.ids, store, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cannot be checked" warning
        hits = Searcher.build(tiny_model, catalog, store=store, index=index, progress=False).by_text("red shirt", k=3)
    assert len(hits) == 3


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_same_ids_other_images_are_refused_in_one_line(tiny_model, catalog, store, small_catalog_dir, tmp_path, kind):
    folder = saved(tiny_model, catalog, store, tmp_path / "v1", index=kind)
    other = shifted(small_catalog_dir, tmp_path / "catB", "image")
    with pytest.raises(SavedIndexError) as e:
        Searcher.build(tiny_model, other, store=store, index=load_index(folder), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg and "12 of its 12 ids have another image" in msg, msg
    assert "'p0'" in msg and f"fclip index --out {folder}" in msg


def test_a_few_changed_images_are_counted(tiny_model, catalog, store, small_catalog_dir, tmp_path):
    folder = saved(tiny_model, catalog, store, tmp_path / "v1")
    df = pd.read_csv(small_catalog_dir / "products.csv")
    df.loc[[3, 5], "image"] = df.loc[[5, 3], "image"].tolist()  # p3 and p5 swap pictures
    (tmp_path / "c").mkdir()
    df.to_csv(tmp_path / "c" / "products.csv", index=False)
    other = Catalog.from_csv(tmp_path / "c" / "products.csv", image_root=small_catalog_dir / "images")
    with pytest.raises(SavedIndexError, match=r"2 of its 12 ids .*\(e\.g\. 'p3'\)"):
        Searcher.build(tiny_model, other, store=store, index=load_index(folder), progress=False)


def test_titles_count_when_title_blended(tiny_model, catalog, store, small_catalog_dir, tmp_path):
    blended = saved(tiny_model, catalog, store, tmp_path / "w05", image_weight=0.5)
    images_only = saved(tiny_model, catalog, store, tmp_path / "w1")
    other = shifted(small_catalog_dir, tmp_path / "titles", "text")
    with pytest.raises(SavedIndexError, match="12 of its 12 ids have another image or title"):
        Searcher.build(tiny_model, other, store=store, index=load_index(blended), progress=False)
    # titles are not in an images-only index's vectors: other titles are fine there
    Searcher.build(tiny_model, other, store=store, index=load_index(images_only), progress=False)


def test_an_exact_index_without_digests_is_checked_by_its_vectors(tiny_model, catalog, store, small_catalog_dir,
                                                                  tmp_path):
    from fclip_workbench.embedding.embed import embed_images
    res = embed_images(tiny_model, catalog, store, progress=False)
    bare = build_index(res.vectors, res.ids, space=tiny_model.space)  # no content recorded
    assert bare.content is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Searcher.build(tiny_model, catalog, store=store, index=bare, progress=False)
    other = shifted(small_catalog_dir, tmp_path / "catB", "image")
    with pytest.raises(InvalidArgumentError, match="12 of its 12 ids have another image there \\(their vectors differ"):
        Searcher.build(tiny_model, other, store=store, index=bare, progress=False)
    folder = save_index(bare, tmp_path / "bare")
    assert meta_of(folder)["content"] is None
    with pytest.raises(SavedIndexError, match="their vectors differ"):
        Searcher.build(tiny_model, other, store=store, index=load_index(folder), progress=False)


def test_an_approximate_index_without_digests_warns_once(tiny_model, catalog, store):
    from fclip_workbench.embedding.embed import embed_images
    res = embed_images(tiny_model, catalog, store, progress=False)
    bare = build_index(res.vectors, res.ids, "faiss", space=tiny_model.space)
    with pytest.warns(UserWarning, match="records no content digests"):
        Searcher.build(tiny_model, catalog, store=store, index=bare, progress=False)


def test_content_reuses_the_store_hashes(tiny_model, catalog, store, monkeypatch):
    """Images hashed while embedding are not hashed again to record or check an index's content."""
    Searcher.build(tiny_model, catalog, store=store, progress=False)  # embeds, hashing every image once
    calls = []
    real = store_module.file_digest
    monkeypatch.setattr(store_module, "file_digest", lambda p: calls.append(p) or real(p))
    item_contents(catalog, catalog.ids, store, 1.0)
    assert calls == []


@pytest.mark.parametrize("edit, word", [
    (lambda m: m.update(ids=[m["ids"][1], m["ids"][0], *m["ids"][2:]]), "ids_sha256 differs"),
    (lambda m: m.update(content=[m["content"][1], m["content"][0], *m["content"][2:]]), "ids_sha256 differs"),
    (lambda m: m.update(content=None), "ids_sha256 differs"),
    (lambda m: m.update(content=m["content"][:-1]), "content must be null or one"),
    (lambda m: m.update(content="abc"), "content must be null or one"),
    (lambda m: m.pop("ids_sha256"), "lacks 'ids_sha256'"),
    (lambda m: m.pop("content"), "lacks 'content'"),
])
def test_edited_ids_or_digests_are_refused(tiny_model, catalog, store, tmp_path, edit, word):
    folder = saved(tiny_model, catalog, store, tmp_path / "v1")
    meta = meta_of(folder)
    edit(meta)
    (folder / "index.json").write_text(json.dumps(meta))
    with pytest.raises(SavedIndexError, match=word) as e:
        load_index(folder)
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


def test_format_2_is_refused_with_a_rebuild_line(tiny_model, catalog, store, tmp_path):
    folder = saved(tiny_model, catalog, store, tmp_path / "v1")
    meta = meta_of(folder)
    meta["format"] = 2
    for k in ("content", "ids_sha256"):
        meta.pop(k)
    (folder / "index.json").write_text(json.dumps(meta))
    with pytest.raises(SavedIndexError, match=f"format 2: .*rebuild it with `fclip index --out {folder}`") as e:
        load_index(folder)
    assert "\n" not in str(e.value)


def test_cli_refuses_a_saved_index_with_another_catalog(tiny_model_dir, small_catalog_dir, tmp_path, capsys):
    common = ["--model", str(tiny_model_dir), "--image-root", str(small_catalog_dir / "images"),
              "--cache", str(tmp_path / "c.sqlite"), "-q"]
    assert cli.main(["index", "--data", str(small_catalog_dir / "products.csv"), "--out", str(tmp_path / "v1"),
                     *common]) == 0
    shifted(small_catalog_dir, tmp_path / "catB", "image")
    capsys.readouterr()
    rc = cli.main(["search", "red shirt", "--data", str(tmp_path / "catB" / "products.csv"), "--index-dir",
                   str(tmp_path / "v1"), *common])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "12 of its 12 ids have another image" in err, err
    assert cli.main(["search", "red shirt", "--data", str(small_catalog_dir / "products.csv"), "--index-dir",
                     str(tmp_path / "v1"), *common]) == 0
