"""The fclip command as a user runs it: exit codes, tables, errors without tracebacks."""
import subprocess
import sys
from pathlib import Path

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
    r5 = run("search", "red shirt", *common, "-k", "50", "-q")  # more than the catalog holds: all, and says so
    assert r5.returncode == 0, r5.stderr
    assert len(r5.stdout.strip().splitlines()) == 13 and "showing all 12" in r5.stderr


@pytest.mark.parametrize("args, message", [
    (["search", "x", "--data", "/no/such/folder"], "No catalog at /no/such/folder"),
    (["embed", "--data", "{data}", "--model", "fashion-clp"], "Unknown model 'fashion-clp'"),
])
def test_user_mistakes_are_one_line_errors(small_catalog_dir, args, message):
    args = [a.replace("{data}", str(small_catalog_dir / "products.csv")) for a in args]
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ layout: the library never imports the CLI
def test_no_library_module_imports_the_cli():
    """cli.py imports the library, never the reverse (training/evaluate used to import cli.py)."""
    import ast
    import pkgutil
    from pathlib import Path

    import fclip_workbench

    pkg = Path(fclip_workbench.__file__).parent
    offenders = []
    for path in sorted(pkg.rglob("*.py")):
        if path == pkg / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                names = [mod] + [f"{mod}.{a.name}" if mod else a.name for a in node.names]
                if node.level and (mod == "cli" or (not mod and any(a.name == "cli" for a in node.names))):
                    names.append("fclip_workbench.cli")
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "fclip_workbench.cli" or n.startswith("fclip_workbench.cli.") for n in names):
                offenders.append(f"{path.relative_to(pkg)}:{node.lineno}")
    assert not offenders, f"library modules import the CLI: {offenders}"

    modules = sorted(m.name for m in pkgutil.walk_packages(fclip_workbench.__path__, "fclip_workbench.")
                     if m.name != "fclip_workbench.cli")
    assert "fclip_workbench.training" in modules and "fclip_workbench.analysis.evaluate" in modules
    code = (f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "assert 'fclip_workbench.cli' not in sys.modules, 'the library imported fclip_workbench.cli'\n"
            "print('ok', len(sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]


# ------------------------------------------------------------------ train and eval as a user runs them
TEACH = ["--data", "teaching", "--limit", "300", "-q"]


def train_once(tmp_path_factory) -> Path:
    """`fclip train` of the teaching recipe for 3 steps, once per test session (other test files reuse it)."""
    out = tmp_path_factory.getbasetemp() / "cli-train" / "run"
    if not (out / "stdout.txt").is_file():
        r = run("train", "--recipe", "tiny-teaching", *TEACH, "--epochs", "1", "--max-steps", "3", "--out", str(out))
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        (out / "stdout.txt").write_text(r.stdout)
    return out


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    out = train_once(tmp_path_factory)
    return out, (out / "stdout.txt").read_text()


def test_train_cli_writes_a_loadable_model(trained_dir):
    out, stdout = trained_dir
    assert stdout.startswith("trained on ") and f"model in {out}" in stdout
    assert "  epoch 1: loss " in stdout
    assert (out / "open_clip_config.json").is_file() and (out / "training.json").is_file()


def test_eval_cli_scores_the_trained_model(trained_dir):
    out, _ = trained_dir
    r = run("eval", "--model", str(out), *TEACH)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "text-to-image" in r.stdout and "R@10" in r.stdout
    assert "zero-shot garment" in r.stdout and "weighted F1" in r.stdout


# ------------------------------------------------------------------ fclip data
def test_data_list_names_every_dataset():
    r = run("data", "list")
    assert r.returncode == 0, r.stderr
    names = {line.split()[0] for line in r.stdout.strip().splitlines()[1:]}
    assert names == {"kagl", "fmnist", "ccp", "fashionpedia"}


def test_data_fetch_into_a_complete_folder_and_a_cluttered_one(tmp_path):
    done = tmp_path / "fashionpedia"
    done.mkdir()
    (done / "category_attributes_descriptions.json").write_text('{"categories": [], "attributes": []}')
    r = run("data", "fetch", "fashionpedia", "--dest", str(done), "-q")
    assert r.returncode == 0, r.stderr
    assert str(done) in r.stdout
    clutter = tmp_path / "clutter"
    clutter.mkdir()
    (clutter / "notes.txt").write_text("not a data set")
    r = run("data", "fetch", "ccp", "--dest", str(clutter), "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert str(clutter) in r.stderr
    r = run("data", "fetch", "imagenet")
    assert r.returncode == 2 and "invalid choice" in r.stderr


# ------------------------------------------------------------------ main(): user errors vs bugs
@pytest.mark.parametrize("exc, fragment", [
    (OSError(28, "No space left on device"), "No space left on device"),
    (OSError(30, "Read-only file system"), "Read-only file system"),
    (PermissionError(13, "Permission denied", "/root/x"), "Permission denied"),
    (IsADirectoryError(21, "Is a directory", "/tmp"), "Is a directory"),
    (NotADirectoryError(20, "Not a directory", "/etc/passwd/x"), "Not a directory"),
])
def test_main_reports_user_os_errors_in_one_line(monkeypatch, capsys, exc, fragment):
    import fclip_workbench.cli as cli

    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_models", boom)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fclip models: error: ") and fragment in err and len(err.strip().splitlines()) == 1


def test_main_collapses_multi_line_messages(monkeypatch, capsys):
    import fclip_workbench.cli as cli
    from fclip_workbench.errors import FclipError

    def boom(args):
        raise FclipError("first line\n   second line\nthird")

    monkeypatch.setattr(cli, "cmd_models", boom)
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err == "fclip models: error: first line second line third\n"


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), OSError(5, "Input/output error")])
def test_main_lets_genuine_bugs_keep_their_traceback(monkeypatch, exc):
    import fclip_workbench.cli as cli

    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_models", boom)
    with pytest.raises(type(exc)):
        cli.main(["models"])
