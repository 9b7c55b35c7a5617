"""tfjest.datasets: an offline benchmark dataset of captioned synthetic images, and its text.

The library core (`tfjest`) does not depend on this package.
"""

from tfjest.datasets.noise import CORRUPTIONS
from tfjest.datasets.noise import NOISE_MIXTURE
from tfjest.datasets.noise import corruption_counts
from tfjest.datasets.scenes import COLOURS
from tfjest.datasets.scenes import NUM_CLASSES
from tfjest.datasets.scenes import POSITIONS
from tfjest.datasets.scenes import SHAPES
from tfjest.datasets.scenes import SIZES
from tfjest.datasets.scenes import class_names
from tfjest.datasets.splits import SPLITS
from tfjest.datasets.splits import generate_split
from tfjest.datasets.splits import web_class_probs
from tfjest.datasets.synthetic_captions import NOISE_LEVELS
from tfjest.datasets.synthetic_captions import SyntheticCaptions
from tfjest.datasets.synthetic_captions import SyntheticCaptionsConfig
from tfjest.datasets.synthetic_captions import load
from tfjest.datasets.synthetic_captions import make_config
from tfjest.datasets.text import CaptionTokenizer
from tfjest.datasets.text import build_vocab
from tfjest.datasets.text import load_vocab
from tfjest.datasets.text import save_vocab

__all__ = [
    "COLOURS",
    "CORRUPTIONS",
    "CaptionTokenizer",
    "NOISE_LEVELS",
    "NOISE_MIXTURE",
    "NUM_CLASSES",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "SyntheticCaptions",
    "SyntheticCaptionsConfig",
    "build_vocab",
    "class_names",
    "corruption_counts",
    "generate_split",
    "load",
    "load_vocab",
    "make_config",
    "save_vocab",
    "web_class_probs",
]
