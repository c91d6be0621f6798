"""ks_train: datasets, sparse sampling, the Knowledge-Spreader model, baselines, training and evaluation."""

__version__ = "0.1.0"
