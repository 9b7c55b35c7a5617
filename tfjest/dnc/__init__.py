"""Divide and Contrast: cluster-conditioned super-batches with hard negatives (docs/SPEC.md §12).

- `clusters.py`: `kmeans`, `cluster_reference`, `Clusters`: a cluster id per example,
  computed once from a reference cache and kept in the store (`tfjest/store/`).
- `contrast.py`: `by_cluster`, which reorders a stream so that each super-batch has a fixed
  cluster mix; composes with `tfjest.select` (JEST over cluster-conditioned candidates).
"""
