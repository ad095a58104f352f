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
# # A map of the catalog
#
# **What the map is.** Every product is a point in a space of a few hundred dimensions (its
# embedding). Nobody can look at 256 dimensions, so **UMAP** squeezes them into two while trying
# to keep each product's nearest neighbours near it. Products the model thinks alike end up
# close together: islands of shoes, of watches, of kurtas. Distances *between* islands mean
# little; what is *inside* an island (and what is in the wrong island) tells you what the model
# has learned.
#
# This notebook:
# 1. embeds the catalog (cached) and computes its UMAP map (cached too: a rerun is instant);
# 2. colours the map by a catalog column;
# 3. highlights the products that match a text query;
# 4. groups products into clusters and names each by its most likely zero-shot labels;
# 5. audits the labels (label issues, near-duplicates, outliers) and shows each audit as a map layer;
# 6. sends products to the annotator: the label-issue list as a review queue, a selection as a batch.
#
# **Learning goals.** After this notebook you can
# - say what a UMAP map keeps (each product's neighbours) and what it throws away (distances between islands);
# - measure how pure a cluster is, instead of judging it by its colours;
# - find near-duplicates with one matrix product, and count them right;
# - read an audit table and send what it finds to the annotator.
#
# Hover a point to see the product; hold Shift and drag around points to select them (or press and
# hold, then drag; or switch the map's toolbar to the lasso): they appear in the grid below the map,
# and in Python as `explorer.selection`. Cmd/Meta+drag adds to the selection, Alt+drag removes.

# %% tags=["parameters"]
DATA = "auto"          # catalog folder or CSV/Parquet file; "auto", "kagl" or "teaching"
MODEL = "auto"         # model spec; "auto" picks one that knows the catalog
LIMIT = 5000           # map only the first N products; None for the whole catalog
COLOR_BY = "auto"      # a catalog column to colour by; "auto" picks one
QUERY = "auto"         # text query to highlight; "auto" picks one that suits the catalog
K = 50                 # products highlighted by the query
N_CLUSTERS = 8         # k-means clusters, named by zero-shot labels
DUP_THRESHOLD = 0.95   # cosine similarity above which two products count as near-duplicates
STORE = "auto"         # label store for the annotator: a .sqlite path or postgresql://...; "auto": data/labels.sqlite
ANNOTATOR = ""         # your name (also typed in the annotator widget)

# %% [markdown]
# ## Embed and project
# `Explorer.build` embeds every image (the embedding cache makes this instant the second time),
# then `UMAPProjector` maps the vectors to 2-d. The projector follows scikit-learn's conventions
# (`fit`, `transform`, fitted attributes ending in `_`) and stores each map on disk, keyed by the
# exact vectors and parameters: rerunning this notebook does not recompute it.

# %%
from IPython.display import display

from fclip_workbench.course import check
from fclip_workbench.data.datasets import catalog_kind  # what the rows are, not the catalog's name
from fclip_workbench.analysis.projection import UMAPProjector
from fclip_workbench.widgets import Explorer
from fclip_workbench.workshop import resolve_data, resolve_model

catalog = resolve_data(DATA, limit=LIMIT)
model = resolve_model(MODEL, catalog)
projector = UMAPProjector(n_neighbors=15, min_dist=0.1, random_state=0, space=model.space)  # cached per space
explorer = Explorer.build(model, catalog, projector=projector)
print(f"{len(explorer.table)} products on the map; UMAP {projector.fit_seconds_:.1f} s "
      f"({'from the cache' if projector.cache_hit_ else 'computed'})")

# %% [markdown]
# ## Colour by a column
# Any catalog column can colour the map (rare values are grouped as "other"). If the model has
# learned a column well, its colours form clean islands; mixed islands are where the model (or
# the labels) are confused.

# %%
if COLOR_BY == "auto":
    COLOR_BY = next((c for c in ("articleType", "masterCategory", "garment", "category") if c in explorer.table),
                    catalog.attributes[0] if catalog.attributes else "")
if COLOR_BY:
    explorer.color_by(COLOR_BY)
explorer

# %% [markdown]
# ## Highlight a query
# The query goes through the text tower; the `K` products whose image vectors are closest to it
# are selected (and coloured "match" if you colour by `query`). On a good model they sit in one
# or two islands: the model's idea of the words. Type other queries in the box above the map.

# %%
if QUERY == "auto":
    QUERY = "red striped dress" if catalog_kind(catalog) == "teaching" else "black leather watch"
hits = explorer.search(QUERY, k=K)
print(f"query {QUERY!r}: {len(explorer.selection)} products selected")
explorer.selection.head(10)

# %% [markdown]
# ## Clusters named by zero-shot labels
# k-means groups the *embeddings* (not the 2-d map) into `N_CLUSTERS` clusters. Each cluster is
# named by the labels the model finds most likely for its products, on average (zero-shot: the
# label set below is only text, no training). A cluster named "shoe / sandal" that contains
# watches is worth a look.
#
# **Predict, then run.** The colours above look like clean islands. Guess the share of the largest
# cluster's products that share its commonest `COLOR_BY` value (1.0 = perfectly pure), write it
# down, then check it in Exercise 1.

# %%
if "articleType" in catalog.attributes:
    counts = catalog.table["articleType"].value_counts()
    LABELS = [str(v) for v in counts.index[:30]]
else:
    LABELS = sorted({str(v) for c in catalog.attributes[:2] for v in catalog.table[c].dropna().unique()})[:30]
clusters = explorer.clusters(LABELS, n_clusters=N_CLUSTERS)
clusters

# %% [markdown]
# ## Selections in Python
# `explorer.selection` is a DataFrame of whatever is selected on the map (a lasso in the page or
# `explorer.select(ids)` here); `explorer.observe(f, names="selected_ids")` calls `f` whenever it
# changes, and `explorer.connect(annotator)` connects the "Send to annotator" buttons to the
# labelling tools (below). Here: select the largest cluster.

# %%
biggest = clusters.sort_values("size", ascending=False).iloc[0]
members = explorer.table.loc[explorer.table["cluster"].str.startswith(f"{biggest.cluster}:"), "item_id"]
explorer.select(list(members))
print(f"cluster {biggest['name']!r}: {len(explorer.selection)} products selected")
explorer.selection.head(10)

# %% [markdown]
# ### Exercise 1: how pure is that cluster?
# `explorer.table` has one row per product on the map, with its `cluster` ("3: shoe / sandal") and
# its `COLOR_BY` value. Set `purity` to the share of the cluster `biggest.cluster`'s products that
# have its most common `COLOR_BY` value. (`str.startswith(f"{biggest.cluster}:")` finds the members.)

# %% tags=["exercise-cluster_purity"]
purity = ...  # your code: a number between 0 and 1

# %%
check("cluster_purity", purity, table=explorer.table, cluster=biggest.cluster, field=COLOR_BY)

# %% [markdown]
# ### Exercise 2: count the near-duplicates
# `explorer.vectors` holds one unit-length vector per product (rows in the order of `explorer.table`).
# Set `n_pairs` to the number of *pairs* of different products whose cosine similarity is at least
# `DUP_THRESHOLD`: one matrix product gives every similarity at once.

# %% tags=["exercise-dup_pairs"]
n_pairs = ...  # your code: a whole number

# %%
check("dup_pairs", n_pairs, vectors=explorer.vectors, threshold=DUP_THRESHOLD)

# %% [markdown]
# ## Audits as map layers
# Three audits of the catalog (`fclip_workbench.analysis.audit`), each a DataFrame, most suspicious first:
# - **label issues**: each product is scored without its own label, by three judges combined: a
#   linear probe trained with cross-validation (it never saw the product), the centre of each
#   class (computed without the product), and the labels of its nearest neighbours; a product
#   whose given label they find very unlikely (`score` near 1) is probably mislabelled (or the
#   model is wrong about it). A class with only one or two products cannot be judged this way:
#   those rows say so (`judged` False, `reason`) and come after all the others;
# - **near-duplicates**: groups of products whose embeddings are almost identical (cosine
#   `DUP_THRESHOLD` or more): the same photo listed twice, or variants of one product;
# - **outliers**: products far from all others (mean cosine distance to their 10 nearest).
#
# `explorer.show_audit(table)` adds each as a layer and colours the map by it; the colour menu
# switches between them. Label issues concentrate where islands touch: that is where labels and
# the model disagree.

# %%
import numpy as np

from fclip_workbench.analysis.audit import find_label_issues, knn_graph, near_duplicates, outliers
from fclip_workbench.analysis.probe_eval import labelled

ids = explorer.table["item_id"].tolist()
given = catalog.table[COLOR_BY].astype(str).str.strip().to_numpy()[[catalog.row_of(i) for i in ids]]
have = labelled(given)  # products with a label to audit
issues = find_label_issues(explorer.vectors[have], given[have], cv=5, space=model.space)
issues.insert(1, "item_id", np.asarray(ids)[have][issues.position])
dups = near_duplicates(explorer.vectors, ids, threshold=DUP_THRESHOLD, space=model.space)
far = outliers(explorer.vectors, ids, k=10, graph=knn_graph(explorer.vectors), space=model.space)
explorer.show_audit(dups)
explorer.show_audit(far)
explorer.show_audit(issues, select=20)  # coloured by label-issue score; the 20 most suspicious selected
print(f"label issues ({COLOR_BY}): {int(issues.is_issue.sum())} of {len(issues)} flagged; "
      f"{dups.group.nunique()} near-duplicate groups ({len(dups)} products); most isolated: {far.item_id.iloc[0]}")
issues.head(10)

# %% [markdown]
# ## Send products to the annotator
# The annotator of notebook `03` over the same catalog and field, with its label store.
# `explorer.connect(annotator)` wires the two buttons under the map:
# - **Send to annotator (review)**: the selected products become the annotator's queue, one by one;
# - **Send to annotator (batch)**: they appear as a grid with their current label and the model's
#   suggestion; pick one value, click the pictures of the products it does not fit, and *Apply*
#   saves it for the rest in one go (source `batch` in the label store, undone as a whole).
#   Products that already have another label keep it unless you click them in: the button then
#   says how many labels it changes.
#
# The label-issue list opens as a review queue directly: `annotator.review(issues)`.

# %%
from fclip_workbench.embedding.embed import EmbeddingResult
from fclip_workbench.paths import default_labels_path
from fclip_workbench.widgets import Annotator

annotator = Annotator.from_catalog(catalog, COLOR_BY, model=model, annotator=ANNOTATOR,
                                   store=default_labels_path() if STORE == "auto" else STORE,
                                   embeddings=EmbeddingResult(ids, explorer.vectors))
explorer.connect(annotator)
annotator.review(issues.head(20))  # the 20 most suspicious labels first
print(f"review queue: {len(annotator.session.queue())} products, first {annotator.item_id}")

# %% [markdown]
# Now a batch: the query's matches, sent as with the *Send to annotator (batch)* button.

# %%
explorer.search(QUERY, k=K)
explorer.send("batch")
print(f"batch grid: {len(annotator.selection_ids)} products from the selection")
annotator

# %% [markdown]
# ## Next
# Notebook `03` labels products with the model's suggestions, one by one or by batch; notebook
# `05` measures linear probes and lists label issues.
