"""Divide and Contrast: cluster-conditioned super-batches with hard negatives (docs/SPEC.md §12).

- `contrast.py`: `by_cluster`, which reorders a stream so that each super-batch has a fixed
  cluster mix; composes with `tfjest.select` (JEST over cluster-conditioned candidates).

The clusters (`tfjest.kmeans`, `tfjest.cluster_reference`) are per-example values computed once
and stored (`tfjest/clusters.py`, beside the reference cache whose store it shares).
"""
