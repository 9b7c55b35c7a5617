"""tfjest: learnability-based data selection (JEST, RHO-LOSS, Bad Students) for tf.data."""

from tfjest.aid import ReLAAid
from tfjest.aid import rela_switch_update
from tfjest.priors import PriorTargets
from tfjest.priors import prior_targets
from tfjest.subsets import epoch_subsets
from tfjest.batching import super_batch_size_for
from tfjest.cache import ReferenceCache
from tfjest.cache import cache_reference
from tfjest.callbacks import SelectionStatsCallback
from tfjest.clusters import Clusters
from tfjest.clusters import cluster_reference
from tfjest.clusters import kmeans
from tfjest.contrast import by_cluster
from tfjest.cost import StepCost
from tfjest.cost import forward_flops
from tfjest.cost import selection_flops
from tfjest.cost import step_cost
from tfjest import efficiency
from tfjest.global_scores import GlobalScores
from tfjest.keras_compat import ensure_multi_worker_fit
from tfjest.losses import Embeddings
from tfjest.losses import per_example_loss
from tfjest.losses import siglip_loss
from tfjest.losses import siglip_replica_loss
from tfjest.losses import sigmoid_pair_loss_block
from tfjest.losses import sigmoid_pair_loss_chunk_sums
from tfjest.losses import sigmoid_pair_loss_diagonal
from tfjest.models import SigLIPDualEncoder
from tfjest.proxy import OnlineProxy
from tfjest.replica import ReplicaSelection
from tfjest.replica import TrainStepSelection
from tfjest.replica import attach
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
from tfjest.transform import Selector
from tfjest.transform import select
from tfjest.version import __version__

__all__ = [
    "Clusters",
    "DenseScores",
    "DiagonalScores",
    "Embeddings",
    "GlobalScores",
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
