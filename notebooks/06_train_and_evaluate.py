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
# # Train a FashionCLIP model, watch the loss, evaluate before and after
#
# **How CLIP learns.** Training shows the model a batch of N (product image, caption) pairs.
# It embeds the N images and the N captions and scores every image against every caption: an
# N x N table of similarities. Only the diagonal holds true pairs. The *contrastive loss* asks,
# for each image, "which of these N captions is yours?" (and the same for each caption), as an
# N-way classification: the loss falls when true pairs score higher than all the wrong ones.
#
# By default this trains the tiny teaching model on the generated catalog (a minute on a laptop
# CPU); set `DATA = "kagl"` and `BASE_MODEL = "fclip-mini"` to fine-tune fclip-mini on real
# products (get KAGL with `fclip data fetch kagl`).
#
# **Learning goals.** After this notebook you can
# - say what the contrastive loss rewards and read a loss curve;
# - compute the chance level of Recall@10 and judge a score against it;
# - compare a model before and after training on held-out products only.

# %% tags=["parameters"]
DATA = "teaching"          # "teaching", "kagl", or a catalog path
LIMIT = None               # first N products only; None for all
RECIPE = "tiny-teaching"   # recipe for a model trained from scratch
BASE_MODEL = None          # a model spec to fine-tune instead (e.g. "fclip-mini")
EPOCHS = 6
MAX_STEPS = None           # stop after this many steps; None runs all epochs
LR = None                  # None: the recipe learning rate, or 1e-5 when fine-tuning
FIELDS = "auto"            # label fields for zero-shot F1; "auto" picks by catalog
OUT = "auto"               # where checkpoints and the final model go; "auto": data/runs/notebook-train

# %% [markdown]
# ## The catalog and its held-out products
# A fixed share of products is set aside by a hash rule (the *held-out* or validation products;
# products with the same title stay on the same side, so a product listed twice cannot be both
# trained on and scored). Training never sees them and every score below is measured on them
# only: the numbers say how the model does on products it has not memorised.

# %%
import pandas as pd

from fclip_workbench.data.datasets import catalog_kind  # what the rows are, not the catalog's name
from fclip_workbench.analysis.evaluate import evaluate
from fclip_workbench.embedding.models import load_model
from fclip_workbench.training import plan_run, train
from fclip_workbench.widgets.viz import loss_curve, metrics_by_model
from fclip_workbench.course import check
from fclip_workbench.paths import data_home
from fclip_workbench.workshop import resolve_data

catalog = resolve_data(DATA, limit=LIMIT)
if OUT == "auto":  # outputs go under the data folder, never next to the notebooks
    OUT = str(data_home() / "runs" / "notebook-train")
print(f"data {DATA!r} ({catalog_kind(catalog)} catalog), recipe {RECIPE if not BASE_MODEL else 'fine-tune ' + BASE_MODEL}; "
      f"precision fp32 (training always runs in full precision); run folder {OUT}")
if FIELDS == "auto":
    FIELDS = ["garment", "colour"] if catalog_kind(catalog) == "teaching" else ["articleType"]
print(catalog.report(limit=3))

# %% [markdown]
# ## Before: the starting model on held-out products
# **Retrieval.** Each held-out product's title is a query; the candidates are the images of
# `n` held-out products (200 here). **R@10** (recall at 10) is the share of queries whose own
# image is among the 10 best-scored images. Guessing at random gives 10 / n, 0.05 for
# n = 200. **MRR** averages 1 / (rank of the right image): 1 when it is always first.
#
# **Zero-shot classification.** Each label value (say "dress") becomes a few prompts ("a photo
# of a dress"); a product gets the label whose prompts score highest against its image. No
# training on labels at all; *weighted F1* averages per-label F1 by how common each label is.

# %%
model, cfg = plan_run(catalog, recipe=None if BASE_MODEL else RECIPE, model=BASE_MODEL,
                      epochs=EPOCHS, max_steps=MAX_STEPS, lr=LR)
split = dict(rule=cfg.split_rule, seed=cfg.seed, val_fraction=cfg.val_fraction)  # the products training sets aside
before = evaluate(model, catalog, FIELDS, n_retrieval=200, **split)
before.table[['task', 'n', 'metric', 'value']]

# %% [markdown]
# ### Exercise 1: the chance level
# A model that ranks the `n` candidate images at random: how often is the right one among the first 10?
# Set `chance_r10` to that share (a number between 0 and 1), computed from `n`.

# %%
n = int(before.table.loc[before.table.metric == "R@10", "n"].iloc[0])  # candidates per query

# %% tags=["exercise-chance_r10"]
chance_r10 = ...  # your code: the R@10 of random guessing among n candidates

# %%
check("chance_r10", chance_r10, n=n)

# %% [markdown]
# **Predict, then run.** The starting model has never seen a caption. Will its R@10 be far above the
# chance level you just computed, near it, or below it? Write your guess down, then run the cell.

# %%
r10_before = float(before.table.loc[before.table.metric == "R@10", "value"].iloc[0])
print(f"R@10 before training: {r10_before:.3f}; chance: {10 / n:.3f}")

# %% [markdown]
# ## Train
# The progress bar shows the loss; each epoch prints the held-out recall and writes a checkpoint
# (`fclip train ... --resume` continues from it). A loss that falls and then flattens is normal;
# one that rises or turns into `nan` means the learning rate is too high.

# %%
result = train(catalog, cfg, OUT, model=model, overwrite=True)  # rerunning the notebook replaces its run in OUT
loss_curve(result.step_losses).show()
pd.DataFrame(result.history)

# %% [markdown]
# ### Exercise 2: how much did the loss fall?
# `result.step_losses` holds the loss of every step, first to last. Set `loss_drop` to the share of the
# first step's loss that was gone by the last step (0: no change, 1: the loss reached zero).

# %% tags=["exercise-loss_drop"]
loss_drop = ...  # your code, from result.step_losses

# %%
check("loss_drop", loss_drop, losses=result.step_losses)

# %% [markdown]
# ## After: the trained model on the same held-out products
# One row per model, one column per metric: read down a column to compare. With the workshop's
# small test settings (a few steps) the change can be small; a full run moves R@10 well above
# the 10 / n of random guessing.
#
# **Predict, then run.** Will the zero-shot F1 on `colour` move as much as R@10? (Titles name colours,
# so training on titles teaches colour words too.)

# %%
after = evaluate(load_model(OUT), catalog, FIELDS, n_retrieval=200, **split)
metrics_by_model({"before": before.table, "after": after.table}).round(3)
