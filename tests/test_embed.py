"""Embedding: exact id mapping, per-item failures, cache hits, appends, resume after a kill."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import embed_images, embed_texts
from fclip_workbench.embedding.store import EmbeddingStore


def test_failures_are_reported_and_ids_stay_exact(tiny_model, small_catalog_dir, tmp_path):
    (small_catalog_dir / "images" / "p3.jpg").write_bytes(b"\xff\xd8\xff broken")
    (small_catalog_dir / "images" / "p5.jpg").unlink()
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    res = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "s.sqlite"), batch_size=4, num_workers=0,
                       progress=False)
    assert {p.item_id for p in res.failures} == {"p3", "p5"}
    assert res.ids == [f"p{i}" for i in range(12) if i not in (3, 5)]
    # row i of the matrix is item ids[i]: compare with embedding that image alone
    from fclip_workbench.embedding.images import load_rgb
    one = tiny_model.encode_pil([load_rgb(small_catalog_dir / "images" / "p7.jpg")])[0]
    np.testing.assert_allclose(res.vectors[res.ids.index("p7")], one, atol=1e-5)


def test_second_run_is_all_cache_and_appends_compute_only_new(tiny_model, small_catalog_dir, tmp_path):
    store = EmbeddingStore(tmp_path / "s.sqlite")
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    first = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    again = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert (first.n_computed, again.n_computed, again.n_cached) == (12, 0, 12)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    # append two products
    Image.new("RGB", (40, 48), (10, 10, 10)).save(small_catalog_dir / "images" / "new1.jpg")
    Image.new("RGB", (40, 48), (250, 250, 10)).save(small_catalog_dir / "images" / "new2.jpg")
    df = pd.read_csv(small_catalog_dir / "products.csv")
    df = pd.concat([df, pd.DataFrame([{"item_id": "n1", "image": "new1.jpg", "text": "black bag"},
                                      {"item_id": "n2", "image": "new2.jpg", "text": "yellow bag"}])])
    df.to_csv(small_catalog_dir / "products.csv", index=False)
    cat2 = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    more = embed_images(tiny_model, cat2, store, batch_size=4, num_workers=0, progress=False)
    assert (more.n_computed, more.n_cached, len(more)) == (2, 12, 14)
    texts = embed_texts(tiny_model, cat2, store, progress=False)
    assert texts.vectors.shape == (14, 16) and texts.n_computed == 14
    assert embed_texts(tiny_model, cat2, store, progress=False).n_computed == 0


def test_worker_processes_give_the_same_matrix(tiny_model, small_catalog_dir, tmp_path):
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    a = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "a.sqlite"), batch_size=5, num_workers=2, progress=False)
    b = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "b.sqlite"), batch_size=12, num_workers=0, progress=False)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def _big_catalog(root, n=1500):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"item_id": str(i), "image": f"images/{i}.png", "text": f"product {i}"})
    pd.DataFrame(rows).to_csv(root / "c.csv", index=False)
    return root / "c.csv"


def test_resume_after_kill_gives_the_uninterrupted_matrix(tiny_model_dir, tiny_model, tmp_path):
    csv = _big_catalog(tmp_path / "data")
    store_path = tmp_path / "killed.sqlite"
    cmd = [sys.executable, "-m", "fclip_workbench.cli", "embed", "--data", str(csv), "--model", str(tiny_model_dir),
           "--cache", str(store_path), "--batch-size", "8", "--workers", "0", "--no-text", "-q", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stored = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists():
            try:
                stored = sqlite3.connect(store_path).execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 40:
                break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cat = Catalog.from_csv(csv, image_root=csv.parent)
    resumed = embed_images(tiny_model, cat, EmbeddingStore(store_path), batch_size=8, num_workers=0, progress=False)
    assert 0 < resumed.n_cached < len(cat), "the kill must land mid-run"
    assert resumed.n_computed == len(cat) - resumed.n_cached
    clean = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "clean.sqlite"), batch_size=8, num_workers=0,
                         progress=False)
    assert resumed.ids == clean.ids
    np.testing.assert_allclose(resumed.vectors, clean.vectors, atol=1e-6)


# ---- hardening: integrity, non-finite vectors, digest memo, pipeline salt, source lines, concurrency

from fclip_workbench.embedding import images as images_mod  # noqa: E402
from fclip_workbench.embedding import store as store_mod  # noqa: E402
from fclip_workbench.embedding.embed import NON_FINITE, image_model_key  # noqa: E402


def _catalog(folder):
    return Catalog.from_csv(folder / "products.csv", image_root=folder / "images")


def test_a_corrupted_stored_vector_is_recomputed(tiny_model, small_catalog_dir, tmp_path):
    cat = _catalog(small_catalog_dir)  # batch size 1 everywhere: bit-identical vectors
    clean = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "clean.sqlite"), batch_size=1, num_workers=0,
                         progress=False)
    path = tmp_path / "s.sqlite"
    embed_images(tiny_model, cat, EmbeddingStore(path), batch_size=1, num_workers=0, progress=False)
    db = sqlite3.connect(path)
    key, blob = db.execute("SELECT key, vec FROM vectors WHERE kind='image' ORDER BY key LIMIT 1").fetchone()
    with db:
        db.execute("UPDATE vectors SET vec=? WHERE key=?", (os.urandom(len(blob)), key))
    db.close()
    store = EmbeddingStore(path)
    assert key not in store.get_many(image_model_key(tiny_model), "image", [key])
    again = embed_images(tiny_model, cat, store, batch_size=1, num_workers=0, progress=False)
    assert (again.n_computed, again.n_cached) == (1, 11)
    assert again.ids == clean.ids
    np.testing.assert_array_equal(again.vectors, clean.vectors)
    assert key in EmbeddingStore(path).get_many(image_model_key(tiny_model), "image", [key])  # overwritten


def test_non_finite_vectors_are_failures_and_never_cached(tiny_model, small_catalog_dir, tmp_path, monkeypatch):
    import torch

    cat = _catalog(small_catalog_dir)
    poisoned = tiny_model.preprocess(images_mod.load_rgb(small_catalog_dir / "images" / "p2.jpg"))
    real_images, real_texts = tiny_model.encode_images, tiny_model.encode_texts

    def nan_images(pixels):
        out = real_images(pixels)  # (b, dim)
        out[[bool(torch.equal(x, poisoned)) for x in pixels]] = np.nan
        return out

    def inf_texts(texts, batch_size=256):
        out = real_texts(texts)  # (b, dim)
        out[[t == "red shoe" for t in texts]] = np.inf
        return out
    monkeypatch.setattr(tiny_model, "encode_images", nan_images)
    monkeypatch.setattr(tiny_model, "encode_texts", inf_texts)
    store = EmbeddingStore(tmp_path / "s.sqlite")
    res = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert [(p.item_id, p.reason) for p in res.failures] == [("p2", NON_FINITE)]
    assert "p2" not in res.ids and len(res) == 11 and np.isfinite(res.vectors).all()
    texts = embed_texts(tiny_model, cat, store, progress=False)
    assert [(p.item_id, p.field, p.reason) for p in texts.failures] == [("p2", "text", NON_FINITE)]
    assert np.isfinite(texts.vectors).all()
    monkeypatch.undo()
    fixed = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert (fixed.n_computed, fixed.n_cached, len(fixed.failures)) == (1, 11, 0)
    assert embed_texts(tiny_model, cat, store, progress=False).n_computed == 1


def test_same_size_replacement_with_restored_mtime_gets_a_new_vector(tiny_model, small_catalog_dir, tmp_path,
                                                                    monkeypatch):
    cat = _catalog(small_catalog_dir)
    store = EmbeddingStore(tmp_path / "s.sqlite")
    first = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    target, other = small_catalog_dir / "images" / "p1.jpg", small_catalog_dir / "images" / "p9.jpg"
    data = other.read_bytes()[: target.stat().st_size].ljust(target.stat().st_size, b"\0")
    st = target.stat()
    target.write_bytes(data)  # like `cp -p`: same size, same inode, mtime restored
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    reads = []
    real = store_mod.file_digest
    monkeypatch.setattr(store_mod, "file_digest", lambda p: reads.append(str(p)) or real(p))
    again = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert reads == [str(target)]  # the memo served the 11 unchanged files
    assert "p1" not in again.ids or not np.array_equal(again.vectors[again.ids.index("p1")],
                                                       first.vectors[first.ids.index("p1")])


def test_image_pipeline_version_change_recomputes_vectors(tiny_model, small_catalog_dir, tmp_path, monkeypatch):
    cat = _catalog(small_catalog_dir)
    store = EmbeddingStore(tmp_path / "s.sqlite")
    first = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False).n_computed == 0
    monkeypatch.setattr(images_mod, "IMAGE_PIPELINE_VERSION", images_mod.IMAGE_PIPELINE_VERSION + 1)
    bumped = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert (bumped.n_computed, bumped.n_cached) == (12, 0)
    np.testing.assert_allclose(bumped.vectors, first.vectors, atol=1e-6)


def test_failures_carry_the_source_line(tiny_model, small_catalog_dir, tmp_path):
    (small_catalog_dir / "images" / "p3.jpg").write_bytes(b"\xff\xd8\xff broken")
    cat = _catalog(small_catalog_dir)
    (small_catalog_dir / "images" / "p5.jpg").unlink()  # after validation: found missing while embedding
    res = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "s.sqlite"), batch_size=4, num_workers=0,
                       progress=False)
    assert {p.item_id: p.line for p in res.failures} == {"p3": 5, "p5": 7}  # header is line 1


def test_readonly_store_still_embeds_everything(tiny_model, small_catalog_dir, tmp_path):
    cat = _catalog(small_catalog_dir)
    path = tmp_path / "s.sqlite"
    full = embed_images(tiny_model, cat.subset(range(6)), EmbeddingStore(path), batch_size=4, num_workers=0,
                        progress=False)
    res = embed_images(tiny_model, cat, EmbeddingStore(path, readonly=True), batch_size=4, num_workers=0,
                       progress=False)
    assert (res.n_cached, res.n_computed, len(res)) == (6, 6, 12)
    np.testing.assert_array_equal(res.vectors[:6], full.vectors)
    assert EmbeddingStore(path).count() == 6


def test_cli_reports_a_bad_cache_file_in_one_line(tiny_model_dir, small_catalog_dir, tmp_path, capsys):
    from fclip_workbench.cli import main
    bad = tmp_path / "cache.sqlite"
    bad.write_text("not a database\n" * 100)
    rc = main(["embed", "--data", str(small_catalog_dir / "products.csv"), "--image-root",
               str(small_catalog_dir / "images"), "--model", str(tiny_model_dir), "--cache", str(bad),
               "--no-text", "-q", "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err
    assert err.endswith(f"{bad} is not an embedding store (not an SQLite database); pass --cache "
                        "elsewhere") and len(err.splitlines()) == 1


def _subset_csv(csv, rows, out):
    df = pd.read_csv(csv).iloc[rows]
    df.to_csv(out, index=False)
    return out


def test_two_processes_embed_into_one_store_at_once(tiny_model_dir, tiny_model, tmp_path):
    csv = _big_catalog(tmp_path / "data", n=120)
    parts = [_subset_csv(csv, range(0, 80), csv.parent / "a.csv"),  # 40 products overlap
             _subset_csv(csv, range(40, 120), csv.parent / "b.csv")]
    store_path = tmp_path / "shared.sqlite"
    procs = []
    try:
        for part in parts:
            cmd = [sys.executable, "-m", "fclip_workbench.cli", "embed", "--data", str(part), "--model",
                   str(tiny_model_dir), "--cache", str(store_path), "--batch-size", "4", "--workers", "0", "-q",
                   "--device", "cpu"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    cat = Catalog.from_csv(csv, image_root=csv.parent)
    shared = embed_images(tiny_model, cat, EmbeddingStore(store_path), batch_size=8, num_workers=0, progress=False)
    assert shared.n_computed == 0 and len(shared) == 120
    clean = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "clean.sqlite"), batch_size=8, num_workers=0,
                         progress=False)
    assert shared.ids == clean.ids
    np.testing.assert_allclose(shared.vectors, clean.vectors, atol=1e-6)
    texts = embed_texts(tiny_model, cat, EmbeddingStore(store_path), progress=False)
    assert texts.n_computed == 0 and len(texts) == 120
