"""ReLA: a frozen prior model's representations as early training targets (docs/SPEC.md §11).

- `aid.py`: `ReLAAid` (the loss switch from prior targets to the task's own loss) and
  `rela_switch_update`.
- `pca.py`: ReLA-D's projection (PCA, each direction standardised): in memory, and out of core
  from exactly combined moments.
- `subsets.py`: `epoch_subsets`, a fresh random subset of the data each epoch.
- `targets.py`: `prior_targets`, `PriorTargets`: the prior's standardised features per
  example, computed once and kept in the store (`tfjest/store/`).
"""
