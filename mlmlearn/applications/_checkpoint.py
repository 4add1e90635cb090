"""Checkpoint files shared by the resumable applications (optimization, Monte Carlo)."""

import os

import numpy as np

__all__ = ["ResumeError", "load_checkpoint", "save_checkpoint"]


class ResumeError(ValueError):
    """A run cannot be resumed from its checkpoint: the structure, the settings or the
    trajectory differ from those the checkpoint was written with (the message names the
    argument and both values)."""


def save_checkpoint(path, arrays):
    """Write ``arrays`` (``np.savez``) to ``path`` atomically: a crash leaves the old file."""
    temporary = path + ".tmp"
    with open(temporary, "wb") as out:
        np.savez(out, **arrays)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def load_checkpoint(path, trajectory, checkpoint_format):
    """The arrays of checkpoint ``path``, or None when there is none and nothing to resume.

    Raises
    ------
    ResumeError
        If ``trajectory`` has frames but there is no checkpoint, or the checkpoint is of
        another format.
    """
    if not os.path.exists(path):
        if os.path.exists(trajectory) and os.path.getsize(trajectory) > 0:
            raise ResumeError(
                f"trajectory={trajectory!r} has frames but no checkpoint {path!r} to resume "
                "from; pass resume=False to start over")
        return None
    with np.load(path, allow_pickle=False) as data:
        saved = {key: data[key] for key in data.files}
    if str(saved["format"]) != checkpoint_format:
        raise ResumeError(f"{path!r} is a checkpoint of format {str(saved['format'])!r}, "
                          f"not {checkpoint_format!r}")
    return saved
