"""Notebooks: each .ipynb is paired with a jupytext percent-format .py that says the same thing, is committed
clean (no outputs), has one `parameters` cell, and runs top to bottom with small parameters (papermill) showing
what it promises."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from fclip_workbench.course import exercise_names, solution_cells, solve
from tests.conftest import dataset_path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("*.ipynb"))
HAVE_MINI = (Path(__file__).resolve().parents[1] / "fclip_workbench" / "weights" / "fclip-mini-v2" /  # = fclip-mini
             "open_clip_model.safetensors").is_file()
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    """(type, source, tags) of each cell: what the .py and the .ipynb of a pair must agree on."""
    return [(c.cell_type, c.source.strip("\n"), _tags(c)) for c in nb.cells]


# ------------------------------------------------------------------ pairs and clean commits
def test_every_notebook_is_a_pair():
    assert IPYNBS, f"no notebooks in {NOTEBOOKS}"
    pys = sorted(p for p in NOTEBOOKS.glob("*.py"))
    assert [p.stem for p in pys] == [p.stem for p in IPYNBS], "each notebooks/NAME.ipynb needs notebooks/NAME.py"
    for py in pys:
        assert "format_name: percent" in py.read_text(), f"{py.name} is not a jupytext percent-format notebook"


def test_jupytext_config_pairs_the_notebooks():
    jupytext = pytest.importorskip("jupytext")
    cfg = jupytext.config.load_jupytext_configuration_file(str(NOTEBOOKS / "jupytext.toml"))
    formats = cfg.formats if isinstance(cfg.formats, str) else ",".join(cfg.formats)
    assert set(formats.split(",")) == {"ipynb", "py:percent"}


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_pair_has_not_drifted(ipynb):
    jupytext = pytest.importorskip("jupytext")
    py = ipynb.with_suffix(".py")
    text_cells = _cells(jupytext.reads(py.read_text(), fmt="py:percent"))
    nb_cells = _cells(nbformat.read(ipynb, as_version=4))
    fix = f"run `jupytext --sync notebooks/{ipynb.name}` (after editing the side you meant to change)"
    assert len(text_cells) == len(nb_cells), f"{py.name} has {len(text_cells)} cells, {ipynb.name} {len(nb_cells)}: {fix}"
    for i, (a, b) in enumerate(zip(text_cells, nb_cells)):
        assert a == b, f"cell {i} differs between {py.name} and {ipynb.name}: {fix}"


def committed_notebook(ipynb: Path):
    """The notebook as git would commit it (its staged blob; the file itself outside a checkout).

    A learner who ran a notebook in place has outputs in the file, which the nbstripout filter
    (`.gitattributes`, set up by `make setup`) strips when staging: that is not a failure."""
    repo = NOTEBOOKS.parent
    try:
        blob = subprocess.run(["git", "show", f":{ipynb.relative_to(repo).as_posix()}"], cwd=repo,
                              capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return nbformat.read(ipynb, as_version=4)
    return nbformat.reads(blob.decode(), as_version=4)


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(ipynb):
    nb = committed_notebook(ipynb)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [i for i, c in enumerate(code) if c.outputs], f"{ipynb.name}: clear the outputs before committing"
    assert all(c.execution_count is None for c in code), f"{ipynb.name}: execution counts left in"
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{ipynb.name}: every cell needs its own stable id"
    params = [c for c in nb.cells if "parameters" in _tags(c)]
    assert len(params) == 1 and params[0].cell_type == "code", f"{ipynb.name}: exactly one code cell tagged parameters"


def test_running_a_notebook_in_place_leaves_git_status_clean(tmp_path):
    """With the filter `make setup` configures, a notebook that was only run (outputs, counts) is no work to commit.

    (git may still list it as modified from its size until it is staged: a stat check, no content; `fclip lab`
    avoids even that by opening copies under data/lab/.)"""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    pytest.importorskip("nbstripout")
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOKS.parent / ".gitattributes", repo / ".gitattributes")
    nb_path = repo / "notebooks" / IPYNBS[0].name
    shutil.copy(IPYNBS[0], nb_path)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                              capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "filter.nbstripout.clean", f'"{sys.executable}" -m nbstripout --keep-id')
    git("config", "filter.nbstripout.smudge", "cat")
    git("add", "-A")
    git("commit", "-qm", "course")
    nb = nbformat.read(nb_path, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs, code.execution_count = [nbformat.v4.new_output("stream", text="ran\n")], 7
    nbformat.write(nb, nb_path)
    assert git("diff", "--stat") == "", "outputs alone show as a change"
    git("add", "-A")
    assert git("status", "--porcelain") == "", "outputs alone left work to commit"
    code.source += "\nprint('my answer')"
    nbformat.write(nb, nb_path)
    assert git("status", "--porcelain").strip() == f"M notebooks/{nb_path.name}", "a real edit must still show"


def test_sync_is_a_no_op(tmp_path):
    """`jupytext --sync` on the committed pairs changes nothing (the pairing config works, the pair agrees)."""
    pytest.importorskip("jupytext")
    for p in [NOTEBOOKS / "jupytext.toml", *IPYNBS, *(p.with_suffix(".py") for p in IPYNBS)]:
        shutil.copy(p, tmp_path / p.name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for ipynb in IPYNBS:
        subprocess.run([sys.executable, "-m", "jupytext", "--sync", ipynb.name], cwd=tmp_path, check=True,
                       capture_output=True, timeout=120)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before), "jupytext --sync created or removed files"
    changed = [name for name in before if json_or_text(tmp_path / name, before[name]) != json_or_text(tmp_path / name)]
    assert not changed, f"jupytext --sync rewrote {changed}"


def json_or_text(path: Path, data: bytes | None = None):
    """File content compared by meaning (JSON parsed, so key order and indentation do not count)."""
    data = path.read_bytes() if data is None else data
    if path.suffix == ".ipynb":
        return json.loads(data)
    return [line for line in data.decode().splitlines() if "jupytext_version" not in line]


# ------------------------------------------------------------------ reading executed notebooks
class _Tables(HTMLParser):
    """Cells of every <table> in an HTML string: tables -> rows -> cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(html: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def outputs(nb, cell_type: str = "code") -> list[dict]:
    return [o for c in nb.cells if c.cell_type == cell_type for o in c.get("outputs", [])]


def html_outputs(nb) -> list[str]:
    return [str(o["data"]["text/html"]) for o in outputs(nb) if "text/html" in o.get("data", {})]


def grids(html_texts: list[str]) -> list[int]:
    """Number of products in each result grid (viz.GRID_CLASS) among HTML outputs."""
    return [h.count("<figure") for h in html_texts if 'class="fclip-grid"' in h]


def check_embed_and_search(nb, params) -> None:
    k = params["K"]
    shown = grids(html_outputs(nb))
    assert shown == [k, k], f"expected two result grids of {k} products (text search, look-alikes), got {shown}"
    boxes = [o for o in outputs(nb) if WIDGET_VIEW in o.get("data", {})  # progress bars are widgets too
             and str(o["data"].get("text/plain", "")).startswith("SearchBox(")]
    assert len(boxes) == 1, "the SearchBox is not shown"
    # the SearchBox ran its query: its Output widget holds a result grid of K products
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    widget_html = [str(d["data"]["text/html"]) for m in state.values() if m.get("model_name") == "OutputModel"
                   for d in m.get("state", {}).get("outputs", []) if "text/html" in d.get("data", {})]
    assert grids(widget_html) == [k], f"the SearchBox shows no grid of {k} products: {widget_html[:1]}"


def check_train_and_evaluate(nb, params) -> None:
    tables = [t for h in html_outputs(nb) for t in html_tables(h)]
    metric_tables = [t for t in tables if t and "R@10" in t[0] and {r[0] for r in t[1:]} >= {"before", "after"}]
    assert len(metric_tables) == 1, f"no table with 'before' and 'after' rows and an R@10 column: {tables}"
    header, *rows = metric_tables[0]
    col = header.index("R@10")
    for row in rows:
        assert re.fullmatch(r"\d\.\d+", row[col]) and 0.0 <= float(row[col]) <= 1.0, f"R@10 of {row[0]}: {row[col]!r}"


def check_label_with_suggestions(nb, params) -> None:
    """The queue table (5 products, best guesses with probabilities), the Annotator showing the queue's first
    product, and the label store's stats (the run labels nothing: 0 labelled items)."""
    queues = [t for h in html_outputs(nb) for t in html_tables(h) if t and "suggestion" in t[0]]
    assert len(queues) == 1 and len(queues[0]) == 6, f"no queue table of 5 products: {queues}"
    header, *rows = queues[0]
    first = rows[0][header.index("item_id")]
    for row in rows:
        assert 0.0 <= float(row[header.index("probability")]) <= 1.0, row
    unc = [float(r[header.index("uncertainty")]) for r in rows]
    assert unc == sorted(unc, reverse=True), f"the queue is not most-uncertain first: {unc}"
    views = [o for o in outputs(nb) if WIDGET_VIEW in o.get("data", {})
             and str(o["data"].get("text/plain", "")).startswith("Annotator(")]
    assert len(views) == 1, "the Annotator is not shown"
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    shown = [m["state"].get("value") for m in state.values()
             if "fclip-annotator-item" in m.get("state", {}).get("_dom_classes", [])]
    assert shown == [first], f"the Annotator shows {shown}, the queue starts with {first}"
    text = "".join(o.get("text", "") for o in outputs(nb) if o.get("output_type") == "stream")
    assert "0 labelled items, 0 decisions" in text, "the label store's stats are not printed"


def check_grounding(nb, params) -> None:
    methods = params["METHODS"]
    panels = [h.count("<figure") for h in html_outputs(nb) if 'class="fclip-grounding"' in h]
    assert panels[:1] == [len(methods)], f"expected a row of {len(methods)} maps (one per method), got {panels}"
    tables = [t for h in html_outputs(nb) for t in html_tables(h)]
    scored = [t for t in tables if t and "pointing" in t[0]]
    assert len(scored) == 1, f"no grounding score table with a pointing column: {tables}"
    header, *rows = scored[0]
    assert {r[0] for r in rows} == {*methods, "centre", "uniform"}, [r[0] for r in rows]
    for r in rows:
        for col in ("pointing", "energy", "iou"):
            v = r[header.index(col)]
            assert re.fullmatch(r"\d(\.\d+)?", v) and 0.0 <= float(v) <= 1.0, f"{col} of {r[0]}: {v!r}"
    assert any(str(o["data"].get("text/plain", "")).startswith("GroundingPanel(") for o in outputs(nb)
               if WIDGET_VIEW in o.get("data", {})), "the GroundingPanel is not shown"


def check_explore_map(nb, params) -> None:
    """The Explorer is shown; the map holds LIMIT products; the query selected K; N_CLUSTERS named clusters;
    selecting the biggest cluster selects exactly its size, shown as a grid in the widget."""
    text = "".join(o.get("text", "") for o in outputs(nb) if o.get("output_type") == "stream")
    m = re.search(r"(\d+) products on the map; UMAP [\d.]+ s", text)
    assert m and int(m.group(1)) == params["LIMIT"], f"map size not printed or wrong: {text[:500]}"
    assert f"{params['K']} products selected" in text, f"the query did not select {params['K']} products"
    assert any(str(o["data"].get("text/plain", "")).startswith("Explorer(") for o in outputs(nb)
               if WIDGET_VIEW in o.get("data", {})), "the Explorer is not shown"
    tables = [t for h in html_outputs(nb) for t in html_tables(h)]
    named = [t for t in tables if t and {"cluster", "size", "name"} <= set(t[0])]
    assert len(named) == 1 and len(named[0]) == params["N_CLUSTERS"] + 1, f"no table of named clusters: {named}"
    header, *rows = named[0]
    sizes = [int(r[header.index("size")]) for r in rows]
    assert sum(sizes) == params["LIMIT"] and all(r[header.index("name")].strip() for r in rows)
    m = re.search(r"cluster '.+': (\d+) products selected", text)
    assert m and int(m.group(1)) == max(sizes), f"the biggest cluster ({max(sizes)}) was not selected: {text[-300:]}"
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    widget_html = [str(v["state"].get("value", "")) for v in state.values() if v.get("model_name") == "HTMLModel"]
    # the widgets' saved state is the last one: the query's matches, selected again and sent to batch mode
    assert min(params["K"], 48) in grids(widget_html), "the Explorer's grid does not show the selection"
    batch_grids = [v["state"] for v in state.values() if "fclip-selection-grid" in v["state"].get("_dom_classes", ())]
    assert [len(g["children"]) for g in batch_grids] == [params["K"]], "the annotator's batch grid lacks the selection"
    m = re.search(r"label issues \(\w+\): (\d+) of (\d+) flagged; (\d+) near-duplicate groups", text)
    assert m and int(m.group(2)) == params["LIMIT"], f"the audits did not run on the map's products: {text[-800:]}"
    issues = [t for t in (t for h in html_outputs(nb) for t in html_tables(h))
              if t and {"item_id", "position", "given_label", "score"} <= set(t[0])]
    assert len(issues) == 1 and len(issues[0]) == 11, "no table of the 10 most suspicious labels"
    first = issues[0][1][issues[0][0].index("item_id")]
    assert re.search(rf"review queue: 20 products, first {re.escape(first)}\b", text), \
        f"the label-issue list did not open as the annotator's review queue: {text[-500:]}"
    assert f"batch grid: {params['K']} products from the selection" in text, "the selection did not reach batch mode"


def check_linear_probes(nb, params) -> None:
    """Zero-shot vs probe table (one row per field, F1 in [0, 1]), a Plotly few-shot curve at k = 1, 5, 10, 50,
    a saved probe, and the label-issue table (10 rows, most suspicious first) with its grid of 10 products."""
    tables = [t for h in html_outputs(nb) for t in html_tables(h)]
    vs = [t for t in tables if t and {"field", "zero_shot_f1", "probe_f1"} <= set(t[0])]
    assert len(vs) == 1 and len(vs[0]) == 4, f"no zero-shot vs probe table with 3 fields: {vs}"
    for row in vs[0][1:]:
        for col in ("zero_shot_f1", "probe_f1"):
            assert 0.0 <= float(row[vs[0][0].index(col)]) <= 1.0, row
    figs = [o["data"]["application/vnd.plotly.v1+json"] for o in outputs(nb)
            if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) == 1, "no Plotly few-shot figure"
    assert [int(x) for x in figs[0]["data"][0]["x"]] == [1, 5, 10, 50], figs[0]["data"][0]["x"]
    text = "".join(o.get("text", "") for o in outputs(nb) if o.get("output_type") == "stream")
    assert re.search(r"saved teaching-garment\.npz: C=\S+, \d+ classes", text), text
    issues = [t for t in tables if t and {"position", "given_label", "suggested_label", "score"} <= set(t[0])]
    assert len(issues) == 1 and len(issues[0]) == 11, f"no label-issue table of 10 products: {issues}"
    scores = [float(r[issues[0][0].index("score")]) for r in issues[0][1:]]
    assert scores == sorted(scores, reverse=True), f"the label issues are not most suspicious first: {scores}"
    assert grids(html_outputs(nb)) == [10], "no grid of the 10 most suspicious products"


CHECKS = {"01_embed_and_search": check_embed_and_search, "06_train_and_evaluate": check_train_and_evaluate,
          "03_label_with_suggestions": check_label_with_suggestions, "05_linear_probes": check_linear_probes,
          "04_grounding": check_grounding}

CHECKS["02_explore_map"] = check_explore_map

RUNS = [
    pytest.param("02_explore_map.ipynb",
                 {"DATA": "teaching", "MODEL": "fclip-mini", "LIMIT": 300, "K": 20, "N_CLUSTERS": 4,
                  "STORE": "labels.sqlite"},
                 marks=pytest.mark.skipif(not HAVE_MINI, reason="needs the bundled fclip-mini weights"),
                 id="02-teaching"),
    pytest.param("01_embed_and_search.ipynb", {"DATA": "teaching", "LIMIT": 300, "K": 6}, id="01-teaching"),
    pytest.param("01_embed_and_search.ipynb",
                 {"DATA": str(dataset_path("kagl")), "MODEL": "fclip-mini", "LIMIT": 300, "K": 6},
                 marks=[pytest.mark.needs_data("kagl"),
                        pytest.mark.skipif(not HAVE_MINI, reason="needs the bundled fclip-mini weights")],
                 id="01-kagl"),
    pytest.param("06_train_and_evaluate.ipynb", {"DATA": "teaching", "LIMIT": 400, "EPOCHS": 2, "MAX_STEPS": 6},
                 id="06-teaching"),
    pytest.param("03_label_with_suggestions.ipynb",
                 {"DATA": "teaching", "LIMIT": 200, "STORE": "labels.sqlite", "ANNOTATOR": "papermill"},
                 id="03-teaching"),
    pytest.param("05_linear_probes.ipynb", {"DATA": "teaching", "LIMIT": 400}, id="05-teaching"),
    pytest.param("04_grounding.ipynb", {"DATA": "teaching", "N_EVAL": 3, "METHODS": ["grad_eclip", "occlusion"]},
                 id="04-teaching"),
]


def test_every_notebook_has_small_parameters_and_a_check():
    assert sorted(p.name for p in IPYNBS) == sorted({r.values[0] for r in RUNS})
    assert sorted(p.stem for p in IPYNBS) == sorted(CHECKS)


def verdicts(nb) -> dict[str, str]:
    """{exercise name: its check's printed line} of an executed notebook ("✓ name: ..." / "✗ name: ...")."""
    text = "".join(o.get("text", "") for o in outputs(nb) if o.get("output_type") == "stream")
    return {m.group(2): m.group(0) for m in re.finditer(r"^([✓✗]) ([\w-]+): .*$", text, re.M)}


@pytest.mark.parametrize("mode", ["solved", "blank"])
@pytest.mark.parametrize("name, params", RUNS)
def test_notebook_runs(name, params, mode, tmp_path, monkeypatch):
    """The notebook runs to the end with its solutions (every check says ✓) and blank, as a learner gets it
    (every check says ✗ with a hint); both show what the notebook promises."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FCLIP_HOME", str(tmp_path / "data"))  # the notebook's outputs, not the checkout's data/
    monkeypatch.setenv("FCLIP_CACHE", str(Path(__file__).resolve().parents[1] / "data" / "cache"))  # shared caches
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # the kernel imports this checkout
    source = nbformat.read(NOTEBOOKS / name, as_version=4)
    names = exercise_names(source)
    if mode == "solved" and not names:
        pytest.skip(f"{name} has no exercises yet: its blank run is the whole run")
    if mode == "solved":
        source = solve(source, solution_cells(NOTEBOOKS / "solutions" / f"{Path(name).stem}.py"))
    src, out = tmp_path / f"in-{name}", tmp_path / name
    nbformat.write(source, src)
    papermill.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path), execution_timeout=600, log_output=True)
    nb = nbformat.read(out, as_version=4)
    errors = [o for o in outputs(nb) if o.get("output_type") == "error"]
    assert not errors, errors
    CHECKS[Path(name).stem](nb, params)
    got = verdicts(nb)
    assert sorted(got) == sorted(names), f"checks printed {sorted(got)}, exercises {names}"
    mark = "✓" if mode == "solved" else "✗"
    wrong = {k: v for k, v in got.items() if not v.startswith(mark) or (mode == "blank" and "Hint:" not in v)}
    assert not wrong, f"{mode} run: {wrong}"


COURSE_UNITS = ("01", "02", "03", "04", "05", "06")


def test_every_notebook_teaches():
    """Learning goals at the top, at least one predict-then-run question, 2 to 4 exercises (the notebooks
    every notebook is a course unit)."""
    for ipynb in [p for p in IPYNBS if p.stem[:2] in COURSE_UNITS]:
        nb = nbformat.read(ipynb, as_version=4)
        md = [c.source for c in nb.cells if c.cell_type == "markdown"]
        assert "**Learning goals.**" in md[0], f"{ipynb.name}: no learning goals in its first cell"
        assert any("**Predict, then run.**" in m for m in md), f"{ipynb.name}: no predict-then-run question"
        assert 2 <= len(exercise_names(nb)) <= 4, f"{ipynb.name}: {exercise_names(nb)}"
        assert not any('"runs/' in c.source for c in nb.cells
                       if c.cell_type == "code"), f"{ipynb.name} writes under notebooks/"
