"""The store: per-example values computed once, kept on disk in shards, joined to a stream.

One format (written locally or by tf.data service workers, byte for byte alike), one
build-or-reuse path and one staleness check (`stale_reason`) for
every per-example value tfjest keeps: a reference's outputs (`reference.py`:
`tfjest.cache_reference`, `tfjest.ReferenceCache`), a prior's ReLA targets
(`tfjest/rela/targets.py`) and DnC's cluster ids (`tfjest/dnc/clusters.py`).

- `fingerprints.py`: what an example, a model and a stream of ids hash to;
- `shards.py`: the format (`metadata.json` plus one TFRecord value shard per input shard), the
  writer, the staleness check and `Store`, which opens a store by its metadata only;
- `inputs.py`: the input shards a store is built from (a list of datasets, or `InputShards`,
  a function of the shard index);
- `service.py`: the build on tf.data service workers, each writing its own value shards;
- `join.py`: the two joins of a store to a stream (streamed, in the build's order, with an id
  check on every element; or in memory, by id, for small data);
- `reference.py`: reference outputs as a store, and the same outputs given as features.

The join and staleness rules are docs/SPEC.md §13.
"""
