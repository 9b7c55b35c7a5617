"""ReLA: a frozen prior model's representations as early training targets (docs/SPEC.md §11).

- `aid.py`: `ReLAAid` (the loss switch from prior targets to the task's own loss) and
  `rela_switch_update`.
- `subsets.py`: `epoch_subsets`, a fresh random subset of the data each epoch.

The prior targets themselves are per-example values, computed once and stored
(`tfjest.prior_targets`, `tfjest/priors.py`, beside the reference cache whose store it shares).
"""
