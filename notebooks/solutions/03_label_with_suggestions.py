"""Solutions to notebook 03's exercises: each `# %% solution: NAME` section replaces the cell tagged
`exercise-NAME` (`fclip_workbench.course.solve`). Names used here come from the notebook's earlier cells."""
# ruff: noqa: F821

# %% solution: zero_shot
sims = vectors @ text_vectors.T                    # (n, L) cosine of every product with every label
zero_shot = [labels[j] for j in sims.argmax(axis=1)]

# %% solution: margin_first
top2 = -np.partition(-proba, 1, axis=1)[:, :2]     # (n, 2) each product's two best probabilities
margin = top2[:, 0] - top2[:, 1]                   # (n,) a small gap is an unsure product
margin_first = [ids[i] for i in np.argsort(margin, kind="stable")[:K]]

# %% solution: kappa
p_o = np.mean(ana == bo)                           # the share of products they agree on
p_e = sum(np.mean(ana == v) * np.mean(bo == v) for v in values)  # agreement by chance, own value shares
kappa = (p_o - p_e) / (1 - p_e)
