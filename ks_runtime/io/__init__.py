"""Frames in and results out: sources, frame queues, the CSV, the timeline plot, the overlay, the live view
and the run summary. Imports ks_runtime.core only."""
