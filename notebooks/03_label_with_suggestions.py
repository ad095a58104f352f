# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Label products with model suggestions
#
# **Why suggestions.** Labelling a catalog by hand means reading every product and typing a value.
# A CLIP model already places each product image near the words that describe it, so it can
# *suggest* a label: the label whose text vector is closest to the image vector (this is
# *zero-shot* classification, notebook 01 showed the same idea as search). You accept a good
# suggestion with one key, or type the right value.
#
# **Suggestions that learn.** Every few labels, the suggester refits: a small linear classifier
# (a *probe*) trained on your labels is blended with the zero-shot scores, and its probabilities
# are *calibrated* (a suggestion shown at 80% is right about 80% of the time).
#
# **Most useful first.** The queue starts with the products the model is least sure about
# (*uncertainty sampling*): a label there teaches it the most. You can also order the queue by
# similarity to a text query, by cluster of similar-looking products, or at random.
#
# **Nothing is lost.** Each decision is written to the label store (a SQLite file by default) and
# committed to disk before the next product is shown; the status line says `saved: ...`.
#
# Change the parameters below, then *Run All*, type your name in the widget and label.

# %% tags=["parameters"]
DATA = "auto"        # catalog folder or CSV/Parquet file; "auto", "kagl" or "teaching"
MODEL = "auto"       # model spec: "fclip-mini", a local folder...; "auto" picks one that knows the data
FIELD = "auto"       # the column to label; "auto": articleType for KAGL, garment for the teaching catalog
LIMIT = 5000         # label among the first N products; None for all
STORE = "auto"       # label store: a .sqlite path or postgresql://... URL; "auto": data/labels.sqlite
ANNOTATOR = ""       # your name (also typed in the widget); every label records who made it

# %% [markdown]
# ## Open the catalog and the model
# Rows that cannot be used are reported with the reason, never silently dropped.

# %%
from IPython.display import display

from fclip_workbench.labelling.annotate import AnnotationSession
from fclip_workbench.data.datasets import catalog_kind  # what the rows are, not the catalog's name
from fclip_workbench.embedding.embed import embed_images
from fclip_workbench.paths import default_labels_path
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.widgets import Annotator
from fclip_workbench.workshop import resolve_data, resolve_model

catalog = resolve_data(DATA, limit=LIMIT)
model = resolve_model(MODEL, catalog)
if FIELD == "auto":
    FIELD = "garment" if catalog_kind(catalog) == "teaching" else "articleType"
print(catalog.report(limit=5))
print("labelling", FIELD, "with", model.name)

# %% [markdown]
# ## Embed the images (cached)
# The suggester works on the image vectors, computed once and cached on disk: a second run is
# instant.

# %%
embeddings = embed_images(model, catalog, store=EmbeddingStore())
print(embeddings.summary())

# %% [markdown]
# ## The labelling session
# The session opens the label store, takes the field's allowed values (its *taxonomy*) from the
# catalog column (merged with any values annotators added before), and builds a zero-shot
# suggester over them. Products that already have a label are not queued again.
#
# The first products of the queue, with the model's best guess: the least sure come first.

# %%
session = AnnotationSession.from_catalog(catalog, FIELD, model=model, embeddings=embeddings,
                                         store=default_labels_path() if STORE == "auto" else STORE,
                                         annotator=ANNOTATOR)
print(session)
session.queue_table(5)

# %% [markdown]
# ## Label
# Keys (with the mouse over the widget): **1**, **2**, **3** accept a suggestion; type in the
# *Correct* box (it completes over the taxonomy) and press Enter to save another value. A value
# outside the taxonomy is refused with the list of valid ones; *Add to taxonomy* adds it on
# purpose. **Batch** mode shows a page of products the model puts in one label: untick the wrong
# ones and confirm the rest in one go. Products chosen elsewhere (a lasso on the map of notebook
# `02`, sent with *Send to annotator (batch)*, or `annotator.batch(ids)`) come as a grid of their
# own: pick one value, click the pictures it does not fit, *Apply*; products that already have
# another label keep it unless you click them in.

# %%
Annotator(session)

# %% [markdown]
# ## What is in the label store
# The current labels (one row per product) and counts of the event log. Every decision is kept
# in the log (who, when, old value, new value, how: suggestion accepted, corrected, batch, undo),
# so nothing an annotator did is ever overwritten without a trace.

# %%
print(session.store.stats(FIELD))
session.store.labels(FIELD).tail(10)

# %% [markdown]
# ## Labelling as a team
# When several people label one catalog, a lead needs to know how far to trust the labels. The
# store can send a share of the products (10% is usual) to **two annotators independently**:
# `store.set_overlap(FIELD, 0.1, by="lead")`. Neither sees the other's answer, and an answer is
# not the label: when the second answer agrees, it becomes the label; when it disagrees, the
# product waits for a person with the *adjudicator* role (`store.grant(name, "adjudicator",
# by="lead")`), who picks the queue order *disagreements to adjudicate* and decides.
#
# From those double answers come the agreement figures: **Cohen's kappa** for each pair of
# annotators (agreement beyond what chance gives), **Krippendorff's alpha** for the field, and
# each annotator's **accuracy** against the settled labels. `store.consensus(FIELD, pred_probs)`
# combines every annotation with the model's probabilities (cleanlab's CROWDLAB) into one label
# per product and a quality score: the lowest scores are the labels to check first.
#
# The dashboard below reads the store's event log: labels per hour per annotator, agreement over
# time, how often suggestions are accepted, and what is left. *Refresh* redraws it.

# %%
from fclip_workbench.labelling.dashboard import TeamDashboard

print(session.store.agreement(FIELD))
TeamDashboard(session.store, FIELD, total=len(session.ids))

# %% [markdown]
# ## Multi-valued fields
# Some fields hold a *set* of values per product: Fashionpedia's attributes
# (`Taxonomy.from_fashionpedia(kind="attributes")` is multi-valued), where a dress has both a
# pattern and a neckline type. Each event adds or removes one value, so two annotators changing
# different values never overwrite each other; undo reverts one's own change. The suggester gives
# each value its own calibrated probability (`labelling.suggest_multi.MultiSuggester`), and the
# audit ranks suspicious sets with cleanlab's multi-label methods (`analysis.audit_multi`).
# A small example in a scratch store:

# %%
import tempfile
from pathlib import Path

from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.taxonomy import Taxonomy

attrs = LabelStore(Path(tempfile.mkdtemp()) / "attributes.sqlite")
attrs.set_taxonomy("attribute", Taxonomy("attribute", ["floral", "striped", "v-neck", "pocket"], multi=True))
attrs.set_values("p1", "attribute", ["floral", "v-neck"], annotator="ana")
attrs.add_value("p1", "attribute", "pocket", annotator="bo")     # bo adds a value ...
attrs.remove_value("p1", "attribute", "floral", annotator="ana")  # ... while ana removes another: both stay
print(sorted(attrs.get_values("p1", "attribute")))
attrs.history("p1", "attribute")[["annotator", "old_value", "new_value", "source"]]
