"""The fclip command as a user runs it: exit codes, tables, errors without tracebacks."""
import subprocess
import sys

import pytest

from fclip_workbench.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "fclip_workbench.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_models_lists_presets(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "fashion-clip" in out and "marqo-fashionsiglip" in out and "fclip-mini" in out


def test_help_and_bad_usage():
    r = run("--help")
    assert r.returncode == 0 and "embed" in r.stdout and "search" in r.stdout and "train" in r.stdout
    bad = run("embed", "--bogus")
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_embed_then_search(tiny_model_dir, small_catalog_dir, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    csv = str(small_catalog_dir / "products.csv")
    common = ["--data", csv, "--image-root", str(small_catalog_dir / "images"), "--model", str(tiny_model_dir),
              "--cache", cache, "--device", "cpu"]
    r = run("embed", *common, "-q")
    assert r.returncode == 0, r.stderr
    assert "12 embedded (0 from cache, 12 computed), 0 failed" in r.stdout
    r2 = run("embed", *common, "-q")
    assert "12 embedded (12 from cache, 0 computed)" in r2.stdout
    r3 = run("search", "red shirt", *common, "-k", "3", "-q")
    assert r3.returncode == 0, r3.stderr
    lines = r3.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "item_id", "score", "text"] and len(lines) == 4
    r4 = run("search", *common, "--image", str(small_catalog_dir / "images" / "p0.jpg"), "-k", "1", "-q",
             "--index", "faiss")
    assert r4.returncode == 0 and " p0 " in r4.stdout


@pytest.mark.parametrize("args, message", [
    (["search", "x", "--data", "/no/such/folder"], "No catalog at /no/such/folder"),
    (["embed", "--data", "{data}", "--model", "fashion-clp"], "Unknown model 'fashion-clp'"),
])
def test_user_mistakes_are_one_line_errors(small_catalog_dir, args, message):
    args = [a.replace("{data}", str(small_catalog_dir / "products.csv")) for a in args]
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
