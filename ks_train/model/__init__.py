"""The Knowledge-Spreader model, its backbones and baselines."""
