"""Solutions to notebook 06's exercises: each `# %% solution: NAME` section replaces the cell tagged
`exercise-NAME` (`fclip_workbench.course.solve`). Names used here come from the notebook's earlier cells."""
# ruff: noqa: F821

# %% solution: chance_r10
chance_r10 = 10 / n  # 10 of the n candidates count as a hit

# %% solution: loss_drop
loss_drop = 1 - result.step_losses[-1] / result.step_losses[0]
