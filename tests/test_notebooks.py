"""Every notebook runs top to bottom with small parameters (papermill), as a workshop would."""
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

from tests.conftest import SHARED_DATA  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HAVE_KAGL = (SHARED_DATA / "kagl" / "styles.csv").is_file()
HAVE_MINI = (Path(__file__).resolve().parents[1] / "fclip_workbench" / "weights" / "fclip-mini" /
             "open_clip_model.safetensors").is_file()

RUNS = [
    pytest.param("01_embed_and_search.ipynb", {"DATA": "teaching", "LIMIT": 300, "K": 6}, id="01-teaching"),
    pytest.param("01_embed_and_search.ipynb",
                 {"DATA": str(SHARED_DATA / "kagl"), "MODEL": "fclip-mini", "LIMIT": 300, "K": 6},
                 marks=pytest.mark.skipif(not (HAVE_KAGL and HAVE_MINI),
                                          reason="needs ../shared/data/kagl and the bundled fclip-mini weights"),
                 id="01-kagl"),
    pytest.param("06_train_and_evaluate.ipynb", {"DATA": "teaching", "LIMIT": 400, "EPOCHS": 2, "MAX_STEPS": 6},
                 id="06-teaching"),
]


def test_every_notebook_has_small_parameters():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted({r.values[0] for r in RUNS})


@pytest.mark.parametrize("name, params", RUNS)
def test_notebook_runs(name, params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path), execution_timeout=600, log_output=True)
    import nbformat
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # the notebook really showed something: a result grid or a metrics table
    text = str([c.get("outputs") for c in nb.cells if c.cell_type == "code"])
    assert "fclip-grid" in text or "after" in text
