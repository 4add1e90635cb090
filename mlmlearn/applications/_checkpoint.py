"""Checkpoint files shared by the resumable applications (optimization, Monte Carlo, the
active-learning loops)."""

import json
import os

import numpy as np

__all__ = [
    "ResumeError",
    "check_settings",
    "check_start",
    "check_trajectory",
    "load_checkpoint",
    "load_rounds",
    "save_checkpoint",
    "save_rounds",
]

# Text formats that keep at least six decimals of Å reproduce a start structure to
# 5e-7 Å; a different start structure differs by far more.
START_TOLERANCE = 1e-6


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


def _formula(numbers):
    from ase.symbols import Symbols

    return Symbols(np.asarray(numbers)).get_chemical_formula()


def check_start(saved, atoms, positions, path):
    """Refuse a checkpoint written for other atoms, or from another start structure.

    ``saved`` holds ``numbers`` and ``start_positions``; ``atoms`` is the structure given
    now and ``positions`` its start positions (Å).
    """
    numbers = saved["numbers"]
    if len(numbers) != len(atoms) or np.any(numbers != atoms.numbers):
        raise ResumeError(
            f"atoms has {len(atoms)} atoms ({atoms.get_chemical_formula()}); the checkpoint "
            f"{path!r} was written for {len(numbers)} atoms ({_formula(numbers)}) — a "
            "different structure")
    shift = np.linalg.norm(saved["start_positions"] - positions, axis=1)
    if shift.max() > START_TOLERANCE:
        i = int(np.argmax(shift))
        raise ResumeError(
            f"atoms is not the start structure of the checkpointed run {path!r}: atom {i} is "
            f"{shift[i]:.3g} Å away from its start position (pass the structure the "
            "interrupted call started from)")


def check_settings(saved, settings, path):
    """Refuse a checkpoint written with other ``settings`` (a dict; the first difference is
    named with both values)."""
    import json

    stored = json.loads(str(saved["settings"]))
    for name, value in settings.items():
        if stored[name] != value:
            raise ResumeError(
                f"{name}={value!r} differs from {stored[name]!r}, with which {path!r} was "
                "written; pass the original value to resume, or resume=False to start over")


def check_trajectory(trajectory, n_bytes):
    """Refuse a trajectory shorter than the ``n_bytes`` its checkpoint recorded."""
    size = os.path.getsize(trajectory) if os.path.exists(trajectory) else 0
    if size < n_bytes:
        raise ResumeError(
            f"trajectory={trajectory!r} has {size} bytes, fewer than the {n_bytes} its "
            "checkpoint recorded: the file was changed")


def load_rounds(checkpoint, settings, *, stopping=()):
    """The state a round-by-round loop (active learning) left in directory ``checkpoint``.

    Returns ``(history, next_round, added)``: the per-round records, the round to run
    next and the structures added so far (read from ``added.traj``); ``([], 0, [])``
    when the directory (created if missing) holds no state yet. ``stopping`` names
    stored settings that are stopping rules, not compared.

    Raises
    ------
    ValueError
        If the state was written with other ``settings``; both are named.
    """
    from ase.io import read

    os.makedirs(checkpoint, exist_ok=True)
    state_path = os.path.join(checkpoint, "state.json")
    if not os.path.exists(state_path):
        return [], 0, []
    with open(state_path) as fh:
        state = json.load(fh)
    for name in stopping:
        state["settings"].pop(name, None)
    if state["settings"] != settings:
        raise ValueError(f"checkpoint {checkpoint!r} was written with settings "
                         f"{state['settings']}, not {settings}")
    path = os.path.join(checkpoint, "added.traj")
    if not (os.path.exists(path) and os.path.getsize(path)):
        return state["history"], state["next_round"], []
    return state["history"], state["next_round"], read(path, ":", parallel=False)


def save_rounds(checkpoint, settings, history, next_round, added):
    """Write what :func:`load_rounds` reads: ``added`` at full precision with its reference
    results (ASE trajectory), then the settings, ``history`` and ``next_round``
    (``state.json``, replaced atomically)."""
    from ase.io import write

    path = os.path.join(checkpoint, "added.traj")
    if added:
        write(path, added, format="traj", parallel=False)
    else:
        open(path, "w").close()
    state_path = os.path.join(checkpoint, "state.json")
    with open(state_path + ".tmp", "w") as fh:
        json.dump({"settings": settings, "history": history, "next_round": next_round}, fh)
    os.replace(state_path + ".tmp", state_path)
