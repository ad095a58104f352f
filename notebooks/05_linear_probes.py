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
# # Linear probes and label audits
#
# **What a linear probe is.** Zero-shot classification compares an image vector with the vectors
# of sentences such as "a photo of a dress": no labelled data needed. A *linear probe* instead
# learns, from labelled products, one weight vector per class on top of the frozen image vectors
# (a logistic regression; the model itself does not change). It tells how much of a label the
# embedding *contains*, whether or not the words for it are known to the text tower.
#
# The protocol is the CLIP paper's: L-BFGS logistic regression, its regularisation strength `C`
# swept on a log grid and picked on a validation split of the training items, then refitted on
# all of them. Scores are **weighted F1** (the FashionCLIP paper's metric: F1 per class, averaged
# with class sizes as weights), always on products the embedding model never trained on.
#
# This notebook:
# 1. embeds a catalog and splits it into the model's training and held-out products;
# 2. puts zero-shot and the probe side by side, per label field;
# 3. draws a few-shot curve: how F1 grows with k labelled products per class;
# 4. audits the labels: products whose label the probe confidently contradicts.
#
# **Learning goals.** After this notebook you can
# - tell what a zero-shot score and a probe score each measure, and read the gap between them;
# - set any score beside its floor: the model that learned nothing but the commonest class;
# - score a probe yourself on held-out products, and say why those must be products the model never saw;
# - read a label audit and decide which flags are label errors and which are model errors.

# %% tags=["parameters"]
DATA = "auto"     # catalog folder or CSV/Parquet file; "auto", "kagl" or "teaching"
MODEL = "auto"    # model spec: "fclip-mini", a local folder...; "auto" picks one that knows the data
FIELDS = "auto"   # label columns to probe, e.g. ["articleType", "baseColour"]; "auto": the usual ones
LIMIT = 2000      # use only the first N products; None for all

# %% [markdown]
# ## Embed and split
# Image vectors come from the on-disk cache when they were computed before. Products the model
# was trained on (its recorded split) train the probe; the held-out products score both methods.

# %%
from IPython.display import HTML, display

from fclip_workbench.analysis.audit import find_label_issues
from fclip_workbench.course import check
from fclip_workbench.embedding.embed import embed_images
from fclip_workbench.analysis.evaluate import default_fields
from fclip_workbench.paths import cache_dir
from fclip_workbench.analysis.probes import LinearProbe
from fclip_workbench.analysis.probe_eval import catalog_labels, few_shot_curve, heldout_rows, probe_vs_zero_shot
from fclip_workbench.widgets.viz import few_shot_figure, image_grid_html
from fclip_workbench.workshop import resolve_data, resolve_model

catalog = resolve_data(DATA, limit=LIMIT)
model = resolve_model(MODEL, catalog)
images = embed_images(model, catalog)
fields = default_fields(catalog) if FIELDS == "auto" else list(FIELDS)
labels = catalog_labels(catalog, images.ids, fields)  # field -> (n,) labels, "" where missing
held = heldout_rows(model, catalog, images.ids)       # (n,) True for held-out products
X = images.vectors                                    # (n, dim)
print(f"{model.name} {model.fingerprint[:12]}: {images.summary()}; "
      f"{(~held).sum()} training and {held.sum()} held-out products; fields {fields}")

# %% [markdown]
# ## Zero-shot or a probe?
# Same held-out products, same metric. A large gap in favour of the probe means the embedding
# separates the classes but the prompts do not name them well (or the text tower does not know
# the words); a small gap means zero-shot is already as good as a little training data.
#
# **Predict, then run.** For the first field, will the probe beat zero-shot, and by how much? Write
# down a guess of both F1 scores (0 to 1), then run.

# %%
table = probe_vs_zero_shot(model, X[~held], {f: labels[f][~held] for f in fields},
                           X[held], {f: labels[f][held] for f in fields})
display(table.style.format({"zero_shot_f1": "{:.3f}", "probe_f1": "{:.3f}", "probe_C": "{:g}"}).hide(axis="index"))

# %% [markdown]
# ### Exercise 1: the floor under every score
# A "model" that ignores the image and always answers the commonest *training* label of the first
# field also gets a weighted F1. Set `majority_f1` to that score on the held-out products.
# `labels[field]` holds each product's label ("" where missing), `held` marks the held-out products,
# and `weighted_f1(true_labels, predicted_labels)` scores a list of predictions.

# %%
from fclip_workbench.analysis.metrics import weighted_f1

field = fields[0]
train_labels = labels[field][~held & (labels[field] != "")]
test_labels = labels[field][held & (labels[field] != "")]

# %% tags=["exercise-majority_f1"]
majority_f1 = ...  # your code: a number between 0 and 1

# %%
check("majority_f1", majority_f1, train_labels=train_labels, test_labels=test_labels)

# %% [markdown]
# ## Few-shot curve
# How many labelled products per class does the probe need? Each point trains on k products per
# class (three random draws; error bars show their spread) and scores the same held-out set.
# The dashed line is zero-shot, which needs none.

# %%
field = fields[0]
train, test = ~held & (labels[field] != ""), held & (labels[field] != "")
curve = few_shot_curve(X[train], labels[field][train], ks=(1, 5, 10, 50), seeds=(0, 1, 2),
                       test_vectors=X[test], test_labels=labels[field][test])
zero_shot = float(table.set_index("field").loc[field, "zero_shot_f1"])
few_shot_figure(curve, zero_shot=zero_shot, title=f"few-shot linear probe: {field}")

# %% [markdown]
# ## A probe to keep
# A probe is saved with the *embedding space* of the vectors it was trained on (the model's weights,
# its precision, the image pipeline and the width: `model.space`), and `check_compatible` refuses
# vectors of any other space with one line that names both.

# %%
probe = LinearProbe(space=model.space).fit(X[train], labels[field][train])
path = probe.save(cache_dir() / "probes" / f"{catalog.name}-{field}.npz")
LinearProbe.load(path).check_compatible(model)
print(f"saved {path.name}: C={probe.C_:g}, {len(probe.classes_)} classes, space {model.space.describe()}")

# %% [markdown]
# ### Exercise 2: score the probe yourself
# Set `accuracy` to the share of held-out products (`X[test]`, labels `labels[field][test]`) whose
# label `probe.predict(...)` gets right.

# %% tags=["exercise-probe_accuracy"]
accuracy = ...  # your code: a number between 0 and 1

# %%
check("probe_accuracy", accuracy, probe=probe, test_vectors=X[test], test_labels=labels[field][test])

# %% [markdown]
# ## Label audit
# Every labelled product gets out-of-sample probabilities from three judges that never saw its
# label: probes trained on the other folds (5-fold cross-validation), the centre of each class
# computed without it, and the labels of its nearest neighbours (one kNN graph), combined by a
# geometric mean. Products are ranked by *self-confidence*, the probability of their given label,
# lowest (most suspicious) first; cleanlab's confident learning marks those it judges mislabelled
# (`is_issue`). A class with one or two products cannot be judged by cross-validation (no fold
# learns it: a correctly labelled one-of-a-kind product would look "contradicted"), so those rows
# say so (`judged` False, with the `reason`) and are listed apart, after the others.
# Published test sets hold label errors too (3.3% on average, Northcutt et al. 2021): check these
# before trusting a score.

# %%
have = labels[field] != ""
issues = find_label_issues(X[have], labels[field][have], cv=5, space=model.space)
rows = issues.position.to_numpy()
issues.insert(1, "item_id", [images.ids[i] for i in have.nonzero()[0][rows]])
rare = issues[~issues.judged]
print(f"{int(issues.is_issue.sum())} of {len(issues)} products flagged for field {field!r}; "
      f"{len(rare)} in classes of one or two products, listed apart")
top = issues[issues.judged].head(10)
display(top.style.format({"score": "{:.3f}", "label_quality": "{:.3f}"}).hide(axis="index"))
display(HTML(image_grid_html([catalog.image_path(catalog.row_of(i)) for i in top.item_id],
                             [f"{g} -> {s}?" for g, s in zip(top.given_label, top.suggested_label)])))

# %% [markdown]
# Products of classes too small to judge: check them by eye (a one-of-a-kind product, or a label
# that belongs to a bigger class: `suggested_label`).

# %%
if len(rare):
    display(rare.head(10).style.format({"score": "{:.3f}", "label_quality": "{:.3f}"}).hide(axis="index"))
else:
    print(f"every class of {field!r} has 3 or more products: all were judged")
