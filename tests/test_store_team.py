"""A team embeds once into PostgreSQL; every other process (CLI, notebook code, app) reads the vectors from there.

Each step is a separate process, as on a team's machines: `fclip embed --cache URL` computes the vectors, a
second `fclip embed` finds every vector in the store (0 computed), and notebook code
with `FCLIP_EMBEDDING_STORE=URL` (no store named) reads them too.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fclip_workbench.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_embed_once_into_postgres_then_read_from_other_processes(tiny_model_dir, small_catalog_dir, postgres_url):
    csv, images = str(small_catalog_dir / "products.csv"), str(small_catalog_dir / "images")
    common = ["--data", csv, "--image-root", images, "--model", str(tiny_model_dir), "--device", "cpu"]
    r = run("embed", *common, "--cache", postgres_url, "-q")
    assert r.returncode == 0, r.stderr
    assert "12 embedded (0 from cache, 12 computed), 0 failed" in r.stdout
    assert "fclip:***@" in r.stdout and ":fclip@" not in r.stdout  # the store is named, its password is not

    r2 = run("embed", *common, "--cache", postgres_url, "-q")
    assert r2.returncode == 0, r2.stderr
    assert "12 embedded (12 from cache, 0 computed)" in r2.stdout

    notebook = textwrap.dedent(f"""
        from fclip_workbench.data.catalog import Catalog
        from fclip_workbench.embedding.embed import embed_images
        from fclip_workbench.embedding.models import load_model
        from fclip_workbench.embedding.store import EmbeddingStore
        store = EmbeddingStore()  # as the notebooks open it: the team's store from the environment
        cat = Catalog.from_csv({csv!r}, image_root={images!r})
        res = embed_images(load_model({str(tiny_model_dir)!r}, device="cpu"), cat, store, progress=False)
        print(store.backend, res.n_cached, res.n_computed)
    """)
    r4 = subprocess.run([sys.executable, "-c", notebook], capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": str(REPO), "FCLIP_EMBEDDING_STORE": postgres_url})
    assert r4.returncode == 0, r4.stderr[-2000:]
    assert r4.stdout.split() == ["postgresql", "12", "0"]


def test_an_unreachable_team_store_is_one_line_from_the_cli(tiny_model_dir, small_catalog_dir):
    from tests.plugins.services import free_port

    r = run("embed", "--data", str(small_catalog_dir / "products.csv"), "--image-root",
            str(small_catalog_dir / "images"), "--model", str(tiny_model_dir), "--device", "cpu", "-q",
            "--cache", f"postgresql://team:secret@127.0.0.1:{free_port()}/vectors")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cannot be reached" in r.stderr and "secret" not in r.stderr
