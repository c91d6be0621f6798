"""Datasets (SynthAU, BP4D, BP4D+, DISFA, generic), folds, sparse sampling, clips and augmentation."""
