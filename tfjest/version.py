"""The single source of tfjest's version (read by setup.py and tfjest.__version__)."""

__version__ = "0.1.0"
