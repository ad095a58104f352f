"""Solutions to notebook 01's exercises: each `# %% solution: NAME` section replaces the cell tagged
`exercise-NAME` (`fclip_workbench.course.solve`). Names used here come from the notebook's earlier cells."""
# ruff: noqa: F821

# %% solution: top_ids
scores = vectors @ query_vector                    # (n,) cosine similarities
top_ids = [ids[i] for i in np.argsort(-scores)[:K]]

# %% solution: same_share
values = [catalog.table[field].iloc[catalog.row_of(i)] for i in similar.item_id]
same_share = sum(v == values[0] for v in values) / len(values)
