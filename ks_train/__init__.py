"""ks_train: datasets, sparse sampling, the Knowledge-Spreader model, baselines, training and evaluation."""

from ks_runtime import __version__

__all__ = ["__version__"]
