"""tfjest: learnability-based data selection (JEST, RHO-LOSS, Bad Students) for tf.data.

The public names are flat (`tfjest.select`, `tfjest.attach`, ...), over modules that show the
design (docs/DESIGN.md has the map):

- the core, at the top: `transform` (`select`), `step` (the one selection step), `selection`
  (the rules), `scores` and `global_scores`, `losses`, `scoring` (where models are called),
  `adapters` (Keras model contracts), `stats`, `batching`, `cost`, `efficiency`, `checks`;
- cost levers: `proxy` (`OnlineProxy`), `resolution` (`multi_resolution`);
- `store/`: per-example values on disk, in shards, joined to a stream (`cache_reference`;
  the prior targets and cluster ids use it too);
- `distribute/`: `attach`, `detach` and the replicated train step;
- `rela/`: the ReLA aid, per-epoch subsets and prior targets (`targets`);
- `dnc/`: k-means clusters (`clusters`) and cluster-conditioned super-batches;
- `datasets/`: the offline TFDS world; `callbacks`, `resume`, `testing`.
"""

from tfjest import efficiency
from tfjest.batching import super_batch_size_for
from tfjest.callbacks import SelectionStatsCallback
from tfjest.cost import StepCost
from tfjest.cost import forward_flops
from tfjest.cost import selection_flops
from tfjest.cost import step_cost
from tfjest.distribute.attach import attach
from tfjest.distribute.attach import detach
from tfjest.distribute.keras_compat import ensure_multi_worker_fit
from tfjest.distribute.replica import ReplicaSelection
from tfjest.distribute.train_step import TrainStepSelection
from tfjest.dnc.clusters import Clusters
from tfjest.dnc.clusters import cluster_reference
from tfjest.dnc.clusters import kmeans
from tfjest.dnc.contrast import by_cluster
from tfjest.global_scores import GlobalScores
from tfjest.losses import Embeddings
from tfjest.losses import per_example_loss
from tfjest.losses import siglip_loss
from tfjest.losses import siglip_replica_loss
from tfjest.losses import sigmoid_pair_loss_block
from tfjest.losses import sigmoid_pair_loss_chunk_sums
from tfjest.losses import sigmoid_pair_loss_diagonal
from tfjest.models import SigLIPDualEncoder
from tfjest.proxy import OnlineProxy
from tfjest.rela.aid import ReLAAid
from tfjest.rela.aid import rela_switch_update
from tfjest.rela.subsets import epoch_subsets
from tfjest.rela.targets import PriorTargets
from tfjest.rela.targets import prior_targets
from tfjest.resolution import multi_resolution
from tfjest.resume import backup_and_restore
from tfjest.resume import deterministic_options
from tfjest.resume import selection_checkpoint
from tfjest.scores import DenseScores
from tfjest.scores import DiagonalScores
from tfjest.scores import PairwiseScores
from tfjest.scores import batch_score
from tfjest.scoring import models_read
from tfjest.selection import Rule
from tfjest.selection import conditional_gains
from tfjest.selection import independent_selection
from tfjest.selection import joint_selection
from tfjest.selection import uniform_selection
from tfjest.stats import SelectionStats
from tfjest.store.reference import ReferenceCache
from tfjest.store.inputs import InputShards
from tfjest.store.reference import cache_reference
from tfjest.transform import Selector
from tfjest.transform import select
from tfjest.version import __version__

__all__ = [
    "Clusters",
    "DenseScores",
    "DiagonalScores",
    "Embeddings",
    "GlobalScores",
    "InputShards",
    "OnlineProxy",
    "PairwiseScores",
    "PriorTargets",
    "ReLAAid",
    "ReferenceCache",
    "ReplicaSelection",
    "Rule",
    "SelectionStats",
    "SelectionStatsCallback",
    "SigLIPDualEncoder",
    "Selector",
    "StepCost",
    "TrainStepSelection",
    "__version__",
    "attach",
    "backup_and_restore",
    "batch_score",
    "by_cluster",
    "cache_reference",
    "cluster_reference",
    "conditional_gains",
    "deterministic_options",
    "detach",
    "efficiency",
    "ensure_multi_worker_fit",
    "epoch_subsets",
    "forward_flops",
    "independent_selection",
    "joint_selection",
    "kmeans",
    "multi_resolution",
    "models_read",
    "per_example_loss",
    "prior_targets",
    "rela_switch_update",
    "select",
    "selection_checkpoint",
    "selection_flops",
    "siglip_loss",
    "siglip_replica_loss",
    "sigmoid_pair_loss_block",
    "sigmoid_pair_loss_chunk_sums",
    "sigmoid_pair_loss_diagonal",
    "step_cost",
    "super_batch_size_for",
    "uniform_selection",
]
