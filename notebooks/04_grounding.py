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
# # Grounding maps: where in the photo does the model see "red stripes"?
#
# A CLIP model gives one number for a photo and a text: their **similarity**. A *grounding map*
# asks which pixels that number comes from. There are two families of answers:
# - **perturbation** methods hide parts of the photo and watch the similarity drop
#   (`occlusion`: a grey square slid over the photo; `ablation`: superpixels removed one at a
#   time; `paper`: the FashionCLIP paper's method, keeping one band of the photo at a time;
#   `crops`: windows cut out of the photo at two scales, each scored against the text).
#   Honest but slow: one model pass per hidden part or window;
# - **gradient** methods ask the model how the similarity would change with each pixel or
#   token (`saliency`, `integrated_gradients`, `gradcam` for ResNet towers, `grad_eclip` for
#   the last attention step). One or a few passes: fast, but only as good as the model's
#   gradients.
#
# Maps are not proof. This notebook **scores** them against garment masks (the pixels that
# really are the "shoes"), so you can choose a method knowing its accuracy and its cost.
#
# **Learning goals.** After this notebook you can
# - ask a grounding map a garment question ("where is the dress?") and read the answer against the mask;
# - compute the pointing game and the energy share yourself;
# - judge a method against the centre baseline before trusting it.
#
# `DATA = "auto"` uses CCP street photos with garment masks when they are on this machine,
# else the generated teaching catalog (exact masks, runs offline in seconds).

# %% tags=["parameters"]
DATA = "auto"        # "ccp", "teaching", or "auto" (CCP when present, else teaching)
MODEL = "auto"       # model spec; "auto": fclip-mini@2 (street photos) for CCP, the teaching model for teaching
ITEM = 0             # which product to explain (row number)
QUERIES = "auto"     # comma-separated texts; "auto": the garments in that product's mask
METHODS = ["crops", "occlusion", "grad_eclip", "paper"]  # methods to compare side by side
N_EVAL = 20          # products scored against their masks (each takes every method once)

# %% [markdown]
# ## A product and its queries

# %%
from IPython.display import HTML, display

from fclip_workbench.grounding.maps import GroundingExplainer, load_image
from fclip_workbench.grounding.metrics import grounding_table, mask_queries
from fclip_workbench.paths import find_dataset
from fclip_workbench.course import check
from fclip_workbench.widgets.viz import grounding_html
from fclip_workbench.widgets import GroundingPanel
from fclip_workbench.workshop import resolve_data, resolve_model

if DATA == "auto":  # the choice "auto" makes, made here where you can see it
    DATA = "ccp" if find_dataset("ccp") else "teaching"
    print(f"DATA 'auto' -> {DATA!r}: CCP street photos when they are here, else the teaching catalog")
catalog = resolve_data(DATA)
if DATA == "ccp":  # only the photos fclip-mini v2 never trained on (it learned from the other CCP photos' crops)
    from fclip_workbench.data.datasets.ccp import heldout_photos

    catalog = heldout_photos(catalog)
    MODEL = "fclip-mini@2" if MODEL == "auto" else MODEL
if MODEL == "auto":  # fclip-mini@2 saw street photos in training; the teaching model knows the teaching catalog
    MODEL = "tiny-teaching" if DATA == "teaching" else "fclip-mini@2"
model = resolve_model(MODEL, catalog)  # full precision (fp32): gradients need it
photo = load_image(catalog.image_path(ITEM))
garments = dict(mask_queries(catalog, ITEM))  # garment name -> (H, W) bool mask: the answer key
queries = list(garments) if QUERIES == "auto" else [q.strip() for q in QUERIES.split(",") if q.strip()]
print(catalog.name, len(catalog), "products; model", model.name, "; photo", photo.size, "; queries", queries)

# %% [markdown]
# ## One photo, several methods
# Each panel is the photo with a map on top (red = raises the similarity most). The caption says
# how long the map took on this machine. `GroundingExplainer.methods()` lists every method.

# %%
for name, note in GroundingExplainer.methods().items():
    print(f"{name:22s} {note}")
maps, captions = {}, {}
for method in METHODS:
    ex = GroundingExplainer(model, method=method)
    m = ex.attribute(photo, queries[0])           # (H, W), the photo's own pixels
    maps[method] = m
    captions[method] = f"'{queries[0]}': {ex.last_seconds_:.2f} s"
outline = {m: garments[queries[0]] for m in METHODS} if queries[0] in garments else None
display(HTML(grounding_html(photo, maps, captions, outlines=outline)))  # white line: the garment's mask

# %% [markdown]
# ## One garment per map
# A grounding map answers one question: "where is the *dress*?". Grounding the whole outfit caption
# at once ("a person wearing cape, dress, shoes, ...") mixes every answer into one blob. Here each
# garment in the photo's mask gets its own map, with that garment's outline drawn on it: a good map
# is hot inside its outline. Perturbation methods reuse the same masked photos for all the garments.
#
# **Predict, then run.** Will the hottest spot of each map fall inside its own garment's outline?

# %%
ex = GroundingExplainer(model, method=METHODS[0])
several = ex.attribute(photo, queries)           # (n_queries, H, W)
display(HTML(grounding_html(photo, dict(zip(queries, several)), outlines=garments)))

# %% [markdown]
# ### Exercise 1: where is the map hottest?
# `map_` is the first method's map for the first garment, `mask` that garment's mask (both (H, W)).
# Set `argmax_pixel` to the (row, column) of the map's largest value.

# %%
import numpy as np

map_ = maps[METHODS[0]]                          # (H, W) float
mask = garments.get(queries[0], next(iter(garments.values())))  # (H, W) bool

# %% tags=["exercise-argmax_pixel"]
argmax_pixel = ...  # your code: (row, column)

# %%
check("argmax_pixel", argmax_pixel, map_=map_)

# %% [markdown]
# ### Exercise 2: the energy share
# Only positive values of the map count as "evidence". Set `energy` to the share of the map's
# positive mass that lies inside the mask (1: all of it on the garment).

# %% tags=["exercise-energy"]
energy = ...  # your code: a number between 0 and 1

# %%
check("energy", energy, map_=map_, mask=mask)

# %% [markdown]
# ## How good are the maps? Scores against the masks
# For each product and each garment in its mask:
# - **pointing**: is the map's highest pixel on the garment (tolerance: 4 % of the photo's shorter side, the original pointing game's 15 px on a 375-px photo)?
# - **energy**: the share of the map's positive mass on the garment;
# - **IoU**: overlap of the map's top pixels (as many as the garment has) with the garment.
#
# Two baselines keep us honest: **centre** (always point at the middle of the photo, where
# people and products usually are) and **uniform** (no idea at all: chance level). A method
# that does not beat *centre* has not learned where things are. On CCP each garment in a photo's
# mask (covering at least 2 % of it) is one query, so *pairs* counts photo x garment pairs.
#
# **Predict, then run.** Which of the methods will beat the *centre* baseline on pointing?

# %%
table = grounding_table(model, catalog, range(min(N_EVAL, len(catalog))), METHODS)
table.sort_values("pointing", ascending=False).round(3)  # best pointer first

# %% [markdown]
# ## Try it
# Pick a product (or upload a photo), type queries separated by commas, choose methods, press
# *Explain*. Slow methods (`paper`, `occlusion`) take longer on big models: the caption says how long.

# %%
GroundingPanel(model, catalog, query=", ".join(queries), methods=tuple(METHODS[:2]), item=catalog.ids[ITEM])

# %% [markdown]
# ## What limits these maps
# A map can only be as sharp as the model's view of the photo: fclip-mini v2 sees a street photo
# as 64 x 96 pixels and its last convolutional stage is a 3 x 3 grid (v1: 64 x 64, 2 x 2), so
# `gradcam` and `grad_eclip` give blobs. `crops` asks the model the question it was trained on
# (which garment is in this cut-out?) and points best with v2 on held-out CCP photos, only a little
# above the centre baseline (see the README); `grad_eclip` reads v2's 3 x 3 grid and points worst. Full-size presets (ViT-B/32 at 224 px, a 7 x 7
# token grid; `multiscale=True` for 14 x 14) see much more.
