"""Write the notebooks in notebooks/ (outputs cleared). Run after editing a notebook's cells here.

    python scripts/make_notebooks.py
"""
from pathlib import Path

import nbformat as nbf

NB = Path(__file__).resolve().parents[1] / "notebooks"


def notebook(cells):
    nb = nbf.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    out = []
    for kind, src, *tags in cells:
        cell = nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags[0]
        out.append(cell)
    nb.cells = out
    return nb


EMBED_AND_SEARCH = [
    ("md", "# Embed a catalog and search it\n\n"
           "Embeds every product image of a catalog with a FashionCLIP-style model (cached: a second run is "
           "instant), reports the products that could not be embedded, and searches the catalog by text.\n\n"
           "Change the parameters below, then *Run All*. `DATA = \"auto\"` uses the KAGL catalog when "
           "`../shared/data` is present and a generated teaching catalog otherwise, so this runs offline."),
    ("code", 'DATA = "auto"     # catalog folder or CSV/Parquet file; "auto", "kagl" or "teaching"\n'
             'MODEL = "auto"    # model spec: "fclip-mini", "fashion-clip", a local folder...; "auto" picks one\n'
             "LIMIT = 2000      # embed only the first N products; None for all\n"
             'QUERY = "auto"    # text query; "auto" picks one that suits the catalog\n'
             "K = 12            # results to show", ["parameters"]),
    ("code", "from IPython.display import HTML, display\n\n"
             "from fclip_workbench.search import Searcher\n"
             "from fclip_workbench.viz import search_results_html\n"
             "from fclip_workbench.widgets import SearchBox\n"
             "from fclip_workbench.workshop import resolve_data, resolve_model\n\n"
             "catalog = resolve_data(DATA, limit=LIMIT)\n"
             "print(catalog.report(limit=5))"),
    ("md", "## Embed\nImages are decoded in worker processes; vectors go to the on-disk cache as each batch finishes."),
    ("code", "model = resolve_model(MODEL, catalog)\n"
             "searcher = Searcher.build(model, catalog)\n"
             "print(model.name, model.fingerprint[:12], '-', searcher.images.summary())\n"
             "for problem in searcher.images.failures[:5]:\n"
             "    print('not embedded:', problem)"),
    ("md", "## Search by text"),
    ("code", 'if QUERY == "auto":\n'
             '    QUERY = "red striped dress" if catalog.name == "teaching" else "navy blue shirt for men"\n'
             "hits = searcher.by_text(QUERY, k=K)\n"
             "display(HTML(search_results_html(catalog, hits)))\n"
             "hits"),
    ("md", "## Try your own queries"),
    ("code", "SearchBox(searcher, query=QUERY, k=K)"),
    ("md", "## Products that look alike\nImage-to-image search from the first result."),
    ("code", "similar = searcher.by_item(hits.item_id.iloc[0], k=K)\n"
             "display(HTML(search_results_html(catalog, similar)))"),
]

TRAIN_AND_EVALUATE = [
    ("md", "# Train a FashionCLIP model, watch the loss, evaluate before and after\n\n"
           "Contrastive training on (product image, caption) pairs. By default this trains the tiny teaching "
           "model on the generated catalog (a minute on a laptop CPU); set `DATA = \"kagl\"` and "
           "`BASE_MODEL = \"fclip-mini\"` to fine-tune fclip-mini on real products."),
    ("code", 'DATA = "teaching"          # "teaching", "kagl", or a catalog path\n'
             "LIMIT = None               # first N products only; None for all\n"
             'RECIPE = "tiny-teaching"   # recipe for a model trained from scratch\n'
             "BASE_MODEL = None          # a model spec to fine-tune instead (e.g. \"fclip-mini\")\n"
             "EPOCHS = 6\n"
             "MAX_STEPS = None           # stop after this many steps; None runs all epochs\n"
             "LR = None                  # None: the recipe learning rate, or 1e-5 when fine-tuning\n"
             'FIELDS = "auto"            # label fields for zero-shot F1; "auto" picks by catalog\n'
             'OUT = "runs/notebook-train"  # where checkpoints and the final model go', ["parameters"]),
    ("code", "import pandas as pd\n\n"
             "from fclip_workbench.evaluate import evaluate\n"
             "from fclip_workbench.models import load_model\n"
             "from fclip_workbench.training import plan_run, train\n"
             "from fclip_workbench.viz import loss_curve\n"
             "from fclip_workbench.workshop import resolve_data\n\n"
             "catalog = resolve_data(DATA, limit=LIMIT)\n"
             'if FIELDS == "auto":\n'
             '    FIELDS = ["garment", "colour"] if catalog.name == "teaching" else ["articleType"]\n'
             "print(catalog.report(limit=3))"),
    ("md", "## Before: the starting model on held-out products"),
    ("code", "model, cfg = plan_run(catalog, recipe=None if BASE_MODEL else RECIPE, model=BASE_MODEL,\n"
             "                      epochs=EPOCHS, max_steps=MAX_STEPS, lr=LR)\n"
             "before = evaluate(model, catalog, FIELDS, n_retrieval=200, val_fraction=cfg.val_fraction)\n"
             "before.table[['task', 'n', 'metric', 'value']]"),
    ("md", "## Train\nThe progress bar shows the loss; each epoch prints the held-out recall and writes a checkpoint "
           "(`fclip train ... --resume` continues from it)."),
    ("code", "result = train(catalog, cfg, OUT, model=model)\n"
             "loss_curve(result.step_losses).show()\n"
             "pd.DataFrame(result.history)"),
    ("md", "## After: the trained model on the same held-out products"),
    ("code", "after = evaluate(load_model(OUT), catalog, FIELDS, n_retrieval=200, val_fraction=cfg.val_fraction)\n"
             "comparison = before.table[['task', 'metric', 'value']].rename(columns={'value': 'before'})\n"
             "comparison['after'] = after.table['value'].values\n"
             "comparison"),
]

if __name__ == "__main__":
    NB.mkdir(exist_ok=True)
    nbf.write(notebook(EMBED_AND_SEARCH), NB / "01_embed_and_search.ipynb")
    nbf.write(notebook(TRAIN_AND_EVALUATE), NB / "06_train_and_evaluate.ipynb")
    print("wrote", sorted(p.name for p in NB.glob("*.ipynb")))
