"""tfjest: learnability-based data selection (JEST, RHO-LOSS, Bad Students) for tf.data."""

from tfjest.callbacks import SelectionStatsCallback
from tfjest.losses import Embeddings
from tfjest.losses import per_example_loss
from tfjest.losses import siglip_loss
from tfjest.losses import sigmoid_pair_loss_block
from tfjest.losses import sigmoid_pair_loss_chunk_sums
from tfjest.losses import sigmoid_pair_loss_diagonal
from tfjest.scores import DenseScores
from tfjest.scores import DiagonalScores
from tfjest.scores import PairwiseScores
from tfjest.scores import batch_score
from tfjest.selection import conditional_gains
from tfjest.selection import independent_selection
from tfjest.selection import joint_selection
from tfjest.selection import uniform_selection
from tfjest.stats import SelectionStats
from tfjest.transform import Selector
from tfjest.transform import select
from tfjest.version import __version__

__all__ = [
    "DenseScores",
    "DiagonalScores",
    "Embeddings",
    "PairwiseScores",
    "SelectionStats",
    "SelectionStatsCallback",
    "Selector",
    "__version__",
    "batch_score",
    "conditional_gains",
    "independent_selection",
    "joint_selection",
    "per_example_loss",
    "select",
    "siglip_loss",
    "sigmoid_pair_loss_block",
    "sigmoid_pair_loss_chunk_sums",
    "sigmoid_pair_loss_diagonal",
    "uniform_selection",
]
