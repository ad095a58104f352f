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
# **Learning goals.** After this notebook you can
# - compute a zero-shot suggestion yourself (the label whose text vector is closest to the image's) and
#   say why labels change it;
# - order products by uncertainty, and tell two measures of it apart (least confident, margin);
# - label in the widget, knowing where each decision is saved and who it is recorded for;
# - measure how far two annotators agree beyond chance (Cohen's kappa), and why raw agreement flatters.
#
# Change the parameters below, then *Run All*, type your name in the widget and label.

# %% tags=["parameters"]
DATA = "auto"        # catalog folder or CSV/Parquet file; "auto", "kagl" or "teaching"
MODEL = "auto"       # model spec: "fclip-mini", a local folder...; "auto" picks one that knows the data
FIELD = "auto"       # the column to label; "auto": articleType for KAGL, garment for the teaching catalog
LIMIT = 5000         # label among the first N products; None for all
STORE = "auto"       # label store: a .sqlite path or postgresql://... URL; "auto": data/labels.sqlite
ANNOTATOR = ""       # your name (also typed in the widget); every label records who made it
K = 10               # products in the uncertainty exercise
N_TEAM = 200         # products two simulated annotators label in the team exercise

# %% [markdown]
# ## Open the catalog and the model
# Rows that cannot be used are reported with the reason, never silently dropped.

# %%
from IPython.display import display

from fclip_workbench.course import check
from fclip_workbench.labelling.annotate import AnnotationSession
from fclip_workbench.data.datasets import catalog_kind  # what the rows are, not the catalog's name
from fclip_workbench.embedding.embed import embed_images
from fclip_workbench.paths import default_labels_path, find_dataset
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.widgets import Annotator
from fclip_workbench.workshop import resolve_data, resolve_model

if DATA == "auto":  # the choices "auto" makes, made here where you can see them
    DATA = str(find_dataset("kagl")) if find_dataset("kagl") else "teaching"
    print(f"DATA 'auto' -> {DATA!r}: KAGL when it is on this machine, else the generated teaching catalog")
catalog = resolve_data(DATA, limit=LIMIT)
kind = catalog_kind(catalog)  # "teaching" for the generated catalog, decided by its rows
if MODEL == "auto":
    MODEL = "tiny-teaching" if kind == "teaching" else "fclip-mini"
    print(f"MODEL 'auto' -> {MODEL!r}: the {kind} catalog needs a model trained on its kind of photos")
model = resolve_model(MODEL, catalog)
if FIELD == "auto":
    FIELD = "garment" if kind == "teaching" else "articleType"
    print(f"FIELD 'auto' -> {FIELD!r}: the column whose values become the taxonomy")
if STORE == "auto":
    STORE = str(default_labels_path())
    print(f"STORE 'auto' -> {STORE!r}: one SQLite file under the workbench's data folder")
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
                                         store=STORE, annotator=ANNOTATOR, order="uncertainty")
print(session)
session.queue_table(5)

# %% [markdown]
# ### Exercise 1: the zero-shot suggestion, by hand
# Before anyone labels, a suggestion is pure zero-shot: each label's prompts ("a photo of a
# {label}", ...) are embedded by the text tower and averaged into one unit vector per label
# (`text_vectors`); an image's suggestion is the label whose vector is closest to its own (the
# highest cosine, a dot product since every vector has length 1). Set `zero_shot` to the suggested
# label of *every* product (one per row of `vectors`), using numpy only.

# %%
import numpy as np

vectors = session.vectors                          # (n, dim) unit image vectors, rows in `session.ids` order
text_vectors = session.suggester.text_weights_     # (L, dim) one unit vector per label
labels = list(session.suggester.classes_)          # the L labels, in the order of `text_vectors`' rows

# %% tags=["exercise-zero_shot"]
zero_shot = ...  # your code: one label per product

# %%
check("zero_shot", zero_shot, vectors=vectors, text_vectors=text_vectors, labels=labels)

# %% [markdown]
# The session's probabilities are `softmax(scale * cosine / T)`: the scale and the temperature `T`
# change how sure a suggestion sounds, never which label comes first. So until labels arrive, the
# session's best guess is exactly yours. Once the suggester has labels, a probe corrects the
# zero-shot scores and the two part ways where the labels taught it something.

# %%
session_top = session.suggester.predict(vectors)   # (n,) the session's best guess for each product
if zero_shot is ...:
    print("answer Exercise 1 to compare your suggestions with the session's")
else:
    agree = float(np.mean(session_top == np.asarray(zero_shot, dtype=object)))
    print(f"{session.suggester.n_labelled_} labels so far; the session's best guess is yours for {agree:.0%} "
          f"of the {len(vectors)} products")

# %% [markdown]
# ### Exercise 2: most useful first
# The queue above is ordered by **least confidence**: `1 - p1`, where `p1` is a product's top
# probability (one product in 5 is drawn at random instead: its label lets the suggester check
# how true its probabilities are). Another measure of doubt is the **margin**: `p1 - p2`, the gap
# between the two best labels. A product torn between "shirt" at 0.45 and "top" at 0.44 is more
# unsure by margin than one at 0.45 with its probability spread thinly over many labels.
#
# **Predict, then run.** Of the `K` products that margin puts first, how many are also among the
# `K` least confident? Write a number down, then answer the exercise and run the cell after it.
#
# Set `margin_first` to the item ids of the `K` products with the smallest margin.
# `proba` holds the session's probabilities (one row per product, one column per label);
# `ids[i]` is the item id of row `i`.

# %%
proba = session.suggester.predict_proba(vectors)   # (n, L) rows sum to 1
ids = session.ids                                  # n item ids

# %% tags=["exercise-margin_first"]
margin_first = ...  # your code: K item ids

# %%
check("margin_first", margin_first, proba=proba, ids=ids, k=K)

# %%
least_confident = [ids[i] for i in np.argsort(proba.max(axis=1), kind="stable")[:K]]
if margin_first is not ...:
    both = len(set(least_confident) & {str(i) for i in margin_first})
    print(f"{both} of the {K} products margin puts first are among the {K} least confident")

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
# ### Exercise 3: agreement beyond chance
# Two simulated annotators label the first `N_TEAM` products: each gives the catalog's own value,
# except for one product in five, where they pick a value at random. How far do they agree?
# The share of products they agree on, `p_o`, flatters: two annotators answering at random agree
# sometimes too. **Cohen's kappa** takes that away: `p_e`, the chance that both give the same value
# if each answered at random with their own value shares, is the sum over values `v` of
# `share_ana(v) * share_bo(v)`, and `kappa = (p_o - p_e) / (1 - p_e)`. Set `kappa` from that
# definition (numpy only; scikit-learn's `cohen_kappa_score` is what the check compares with).

# %%
rng = np.random.default_rng(0)
truth = catalog.table[FIELD].astype(str).to_numpy()[:N_TEAM]   # (N_TEAM,) the catalog's own values
values = np.array(sorted(set(truth)))


def simulated_annotator(slip: float = 0.2) -> np.ndarray:
    """The truth, except a random value on a `slip` share of the products."""
    slips = rng.random(len(truth)) < slip
    return np.where(slips, rng.choice(values, len(truth)), truth)


ana, bo = simulated_annotator(), simulated_annotator()

# %% tags=["exercise-kappa"]
kappa = ...  # your code: a number of at most 1

# %%
check("kappa", kappa, a=ana, b=bo)

# %% [markdown]
# **Predict, then run.** A lazy annotator gives every product the commonest value. They agree with
# `ana` on many products (how many depends on how skewed the field is). What kappa will they get?

# %%
from sklearn.metrics import cohen_kappa_score

lazy = np.full(len(truth), values[np.argmax([(truth == v).sum() for v in values])])
print(f"ana and bo: agree on {np.mean(ana == bo):.0%}, kappa {cohen_kappa_score(ana, bo):.2f}")
print(f"ana and the lazy annotator: agree on {np.mean(ana == lazy):.0%}, kappa {cohen_kappa_score(ana, lazy):.2f}")

# %% [markdown]
# The store computes the same figures from real double answers (below: none yet, as nobody has
# labelled the overlap products). The dashboard reads the store's event log: labels per hour per
# annotator, agreement over time, how often suggestions are accepted, and what is left. *Refresh*
# redraws it.

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
