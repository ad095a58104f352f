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
# # Embed a catalog and search it
#
# **What an embedding is.** A CLIP model turns a product photo into a list of numbers (a *vector*,
# 512 numbers for ViT-B/32, fewer for the small models here) and does the same for a sentence.
# It was trained so that a photo and a sentence that describe the same product end up pointing in
# nearly the same direction. Comparing two things is then one number: the **cosine similarity**
# of their vectors (1 = same direction, 0 = unrelated). FashionCLIP is CLIP trained on fashion
# products, so "navy blue shirt" lands near photos of navy blue shirts.
#
# This notebook:
# 1. opens a catalog (a table of products + their images) and reports any bad rows;
# 2. embeds every product image (cached on disk: a second run is instant);
# 3. searches the catalog by text, then by image.
#
# **Learning goals.** After this notebook you can
# - explain why one dot product compares a photo with a sentence;
# - rank a catalog by a text query yourself, with numpy, and get what the search returns;
# - tell search by words from search by looks, and measure how alike look-alikes are.
#
# Change the parameters below, then *Run All*. `DATA = "auto"` uses the KAGL catalog when it is
# on this machine (`fclip data list` says where) and a generated teaching catalog otherwise, so
# this runs offline.

# %% tags=["parameters"]
DATA = "auto"     # catalog folder or CSV/Parquet file; "auto", "kagl" or "teaching"
MODEL = "auto"    # model spec: "fclip-mini", "fashion-clip", a local folder...; "auto" picks one
LIMIT = 2000      # embed only the first N products; None for all
QUERY = "auto"    # text query; "auto" picks one that suits the catalog
K = 12            # results to show

# %% [markdown]
# ## Open the catalog
# Every row is checked (id, image file, text); rows that cannot be used are listed with the
# reason, never silently dropped.

# %%
from IPython.display import HTML, display

from fclip_workbench.data.datasets import catalog_kind  # what the rows are, not the catalog's name
from fclip_workbench.search.searcher import Searcher
from fclip_workbench.widgets.viz import search_results_html
from fclip_workbench.widgets import SearchBox
from fclip_workbench.course import check
from fclip_workbench.paths import find_dataset
from fclip_workbench.workshop import resolve_data, resolve_model

if DATA == "auto":  # the choice "auto" makes, made here where you can see it
    DATA = str(find_dataset("kagl")) if find_dataset("kagl") else "teaching"
    print(f"DATA 'auto' -> {DATA!r}: KAGL when it is on this machine, else the generated teaching catalog")
catalog = resolve_data(DATA, limit=LIMIT)
print(catalog.report(limit=5))

# %% [markdown]
# ## Embed
# Images are decoded in worker processes and pass through the model's image tower in batches;
# each vector goes to the on-disk cache as its batch finishes. The cache is keyed by the model's
# *fingerprint* (a hash of its weights) and each image's content, so changing the model or an
# image recomputes only what changed. Images that cannot be read are reported, not skipped
# silently.

# %%
kind = catalog_kind(catalog)  # "teaching" for the generated catalog, decided by its rows
if MODEL == "auto":
    MODEL = "tiny-teaching" if kind == "teaching" else "fclip-mini"
    print(f"MODEL 'auto' -> {MODEL!r}: the {kind} catalog needs a model trained on its kind of photos")
model = resolve_model(MODEL, catalog)  # full precision (fp32): the reference every faster variant is compared to
print("embedding space:", model.space.describe())
searcher = Searcher.build(model, catalog)
print(model.name, model.fingerprint[:12], '-', searcher.images.summary())
for problem in searcher.images.failures[:5]:
    print('not embedded:', problem)

# %% [markdown]
# ## Search by text
# The query goes through the model's *text* tower. Its vector is compared with every image
# vector (a dot product, since all vectors have length 1) and the `K` highest scores win.
# Scores of CLIP models are small (often 0.2 to 0.4): only their order matters, not their size.

# %%
if QUERY == "auto":
    QUERY = "red striped dress" if catalog_kind(catalog) == "teaching" else "navy blue shirt for men"
hits = searcher.by_text(QUERY, k=K)
display(HTML(search_results_html(catalog, hits)))
hits

# %% [markdown]
# ### Exercise 1: rank the catalog yourself
# `vectors` holds every image's vector (one row per product, length 1), `query_vector` the query's.
# Set `top_ids` to the item ids of the `K` products most similar to the query (most similar first),
# using numpy only. `ids[i]` is the item id of row `i`.

# %%
import numpy as np

vectors = searcher.images.vectors                  # (n, dim)
ids = searcher.images.ids                          # n item ids
query_vector = model.encode_texts([QUERY])[0]      # (dim,)

# %% tags=["exercise-top_ids"]
top_ids = ...  # your code: the K best item ids

# %%
check("top_ids", top_ids, vectors=vectors, query_vector=query_vector, ids=ids, k=K)

# %% [markdown]
# ## Try your own queries
# Type a description and press Enter. Try colours, garments, patterns, and what the model gets
# wrong: "a shirt that is not blue" shows that CLIP matches words, it does not reason about them.
#
# **Predict, then run.** Of the `K` results for "a dress that is not red" (teaching catalog) or
# "a shirt that is not blue" (KAGL), how many will be red (blue)? Write a number down, then run.

# %%
colour_col = "colour" if kind == "teaching" else "baseColour"
negated, colour = ("a dress that is not red", "red") if kind == "teaching" else ("a shirt that is not blue", "Blue")
neg_hits = searcher.by_text(negated, k=K)
n_colour = sum(str(catalog.table[colour_col].iloc[catalog.row_of(i)]) == colour for i in neg_hits.item_id)
print(f"{negated!r}: {n_colour} of {K} results are {colour}")

# %%
SearchBox(searcher, query=QUERY, k=K)

# %% [markdown]
# ## Products that look alike
# Image-to-image search from the first result: the query is now an *image* vector, so the
# neighbours share shape, colour and style rather than words. Near-identical neighbours are often
# the same product listed twice.

# %%
similar = searcher.by_item(hits.item_id.iloc[0], k=K)
display(HTML(search_results_html(catalog, similar)))

# %% [markdown]
# ### Exercise 2: how alike are the look-alikes?
# Set `same_share` to the share of the `K` look-alikes (the first product itself included) whose
# `field` value (below) is the same as the first product's. `catalog.row_of(item_id)` gives a row of
# `catalog.table`.

# %%
field = "garment" if kind == "teaching" else "articleType"

# %% tags=["exercise-same_share"]
same_share = ...  # your code: a number between 0 and 1

# %%
check("same_share", same_share, catalog=catalog, similar=similar, field=field)

# %% [markdown]
# ## Next
# How good is this search, in numbers? Notebook `06_train_and_evaluate` measures it (Recall@10
# on held-out products) before and after training a model on the catalog.
