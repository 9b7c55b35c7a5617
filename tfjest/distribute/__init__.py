"""Selection under `tf.distribute` and on accelerators: the train-step placement.

- `attach` / `detach`: move a selector's scoring and selection into the model's train step
  (`attach.py`), and back out (`detach`).
- `replica.py`: one replica's selection (`ReplicaSelection`) and its collectives.
- `train_step.py`: what `attach` returns, the `tf.data` side of a selecting train step.
- `guards.py`: the checks `attach` runs first (sizes per replica, frozen and replicated
  scoring models, XLA and the statistics).
- `keras_compat.py`: the fix that lets Keras 3 `fit` run under MultiWorkerMirroredStrategy.

The public names are `tfjest.attach`, `tfjest.detach`, `tfjest.ReplicaSelection`,
`tfjest.TrainStepSelection` and `tfjest.ensure_multi_worker_fit`.
"""
