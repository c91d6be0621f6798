"""Face stages: a raw frame in, the aligned face crop out (or no face). Imports ks_runtime.core only."""
