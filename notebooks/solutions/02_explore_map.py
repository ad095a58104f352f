"""Solutions to notebook 02's exercises: each `# %% solution: NAME` section replaces the cell tagged
`exercise-NAME` (`fclip_workbench.course.solve`). Names used here come from the notebook's earlier cells."""
# ruff: noqa: F821

# %% solution: cluster_purity
in_cluster = explorer.table["cluster"].str.startswith(f"{biggest.cluster}:")
counts = explorer.table.loc[in_cluster, COLOR_BY].astype(str).value_counts()
purity = counts.iloc[0] / counts.sum()

# %% solution: dup_pairs
import numpy as np

sims = explorer.vectors @ explorer.vectors.T          # (n, n) cosine similarities
n_pairs = int(np.triu(sims >= DUP_THRESHOLD, k=1).sum())  # upper triangle: each pair once, no self-pairs
