"""Tests' copies of a trained checkpoint with config fields changed (the weights stay as trained)."""

from pathlib import Path


def with_config(checkpoint: Path, out: Path, method: str | None = None, **model_fields) -> Path:
    """Save `checkpoint` again at `out` with config.method and config.model fields replaced; returns `out`."""
    from ks_train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    state.pop("path")  # written back by load_checkpoint, not part of the saved state
    state.pop("format_version")
    if method is not None:
        state["config"]["method"] = method
    state["config"]["model"].update(model_fields)
    save_checkpoint(state, out)
    return out
