"""Solutions to notebook 04's exercises: each `# %% solution: NAME` section replaces the cell tagged
`exercise-NAME` (`fclip_workbench.course.solve`). Names used here come from the notebook's earlier cells."""
# ruff: noqa: F821

# %% solution: argmax_pixel
argmax_pixel = np.unravel_index(np.argmax(map_), map_.shape)  # flat index -> (row, column)

# %% solution: energy
positive = np.clip(map_, 0, None)
energy = positive[mask].sum() / positive.sum()
