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

from fclip_workbench.catalog import Catalog
from fclip_workbench.embed import embed_images, embed_texts
from fclip_workbench.store import EmbeddingStore


def test_failures_are_reported_and_ids_stay_exact(tiny_model, small_catalog_dir, tmp_path):
    (small_catalog_dir / "images" / "p3.jpg").write_bytes(b"\xff\xd8\xff broken")
    (small_catalog_dir / "images" / "p5.jpg").unlink()
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    res = embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "s.sqlite"), batch_size=4, num_workers=0,
                       progress=False)
    assert {p.item_id for p in res.failures} == {"p3", "p5"}
    assert res.ids == [f"p{i}" for i in range(12) if i not in (3, 5)]
    # row i of the matrix is item ids[i]: compare with embedding that image alone
    from fclip_workbench.images import load_rgb
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
