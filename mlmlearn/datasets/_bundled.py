"""The bundled xTB data sets: packing MD trajectories into archives and loading them.

An archive is one compressed ``.npz`` holding every frame of every run:
per-atom ``numbers`` (int8), ``positions`` (float64, Å) and ``forces``
(float32, eV/Å), per-frame ``energy`` (float64, eV), ``n_atoms``, ``run``,
``step``, target ``temperature_K`` and total ``charge`` (e; archives without
it take ``metadata["settings"]["charge"]``, default 0), and a JSON
``metadata`` string saying how the data were generated.

Loading checks every frame for broken bonds and detached fragments
(:func:`~mlmlearn.datasets.frame_integrity`, about 0.1 s per set) and by
default leaves the broken frames out.
"""

import json
import os
from importlib import resources

import numpy as np

__all__ = ["load_alkanes", "load_gold_thiolate_rings", "load_au25", "pack"]


def pack(paths, output, *, metadata):
    """Pack the extxyz trajectories ``paths`` (one per run) into the archive ``output``.

    ``metadata`` must hold ``runs``: one dict per path, in the same order,
    with at least ``name``; it is stored as JSON beside the arrays.
    """
    from ._md import read_frames

    if len(metadata.get("runs", ())) != len(paths):
        raise ValueError("metadata['runs'] needs one entry per trajectory in paths")
    numbers, positions, forces = [], [], []
    energy, n_atoms, run, step, temperature, charge = [], [], [], [], [], []
    for r, path in enumerate(paths):
        for frame in read_frames(path):
            numbers.append(frame.numbers.astype(np.int8))
            positions.append(frame.positions)
            forces.append(frame.get_forces().astype(np.float32))
            energy.append(frame.get_potential_energy())
            n_atoms.append(len(frame))
            run.append(r)
            step.append(frame.info["step"])
            temperature.append(frame.info["temperature_K"])
            charge.append(frame.info.get("charge", frame.get_initial_charges().sum()))
    np.savez_compressed(
        output,
        numbers=np.concatenate(numbers),
        positions=np.concatenate(positions),
        forces=np.concatenate(forces),
        energy=np.array(energy),
        n_atoms=np.array(n_atoms, dtype=np.int32),
        run=np.array(run, dtype=np.int32),
        step=np.array(step, dtype=np.int32),
        temperature_K=np.array(temperature, dtype=np.float32),
        charge=_integer_charges(charge),
        metadata=np.array(json.dumps(metadata, indent=1)),
    )
    return output


def load_archive(path, *, include_broken=False):
    """Load an archive written by :func:`pack` (see :func:`load_alkanes` for the result).

    Frames with a broken bond or a detached fragment (:func:`frame_integrity`)
    are left out unless ``include_broken`` is true.
    """
    from sklearn.utils import Bunch

    from .._optional import import_optional
    from ._integrity import _integrity
    from ._md import _set_total_charge

    Atoms = import_optional("ase", purpose="loading a bundled data set").Atoms
    SinglePointCalculator = import_optional(
        "ase.calculators.singlepoint", purpose="loading a bundled data set"
    ).SinglePointCalculator
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    metadata = json.loads(str(arrays["metadata"]))
    n_frames = len(arrays["energy"])
    bounds = np.concatenate([[0], np.cumsum(arrays["n_atoms"])])
    numbers = [arrays["numbers"][bounds[k] : bounds[k + 1]] for k in range(n_frames)]
    positions = [arrays["positions"][bounds[k] : bounds[k + 1]] for k in range(n_frames)]
    if "charge" in arrays:
        charge = arrays["charge"].astype(np.int64)
    else:  # archives packed before frames carried their charge
        charge = np.full(n_frames, int(metadata.get("settings", {}).get("charge", 0)))
    intact, problems = _integrity(numbers, positions)
    keep = np.arange(n_frames) if include_broken else np.flatnonzero(intact)

    run_names = [r["name"] for r in metadata["runs"]]
    frames = []
    for k in keep:
        a, b = bounds[k], bounds[k + 1]
        atoms = Atoms(numbers[k], positions=positions[k])
        _set_total_charge(atoms, int(charge[k]))  # before the calculator: its state has it
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(arrays["energy"][k]),
            forces=arrays["forces"][a:b].astype(np.float64),
        )
        atoms.info.update(
            run=run_names[arrays["run"][k]],
            step=int(arrays["step"][k]),
            temperature_K=float(arrays["temperature_K"][k]),
        )
        frames.append(atoms)
    runs = metadata["runs"]
    split = np.array([runs[r].get("split", "train") for r in arrays["run"]])
    return Bunch(
        frames=frames,
        energy=arrays["energy"][keep],
        run=arrays["run"][keep],
        run_names=run_names,
        step=arrays["step"][keep],
        temperature_K=arrays["temperature_K"][keep].astype(np.float64),
        split=split[keep],
        charge=charge[keep],
        intact=intact[keep],
        problems=[problems[k] for k in keep],
        index=keep,
        n_broken=int((~intact).sum()),
        metadata=metadata,
        DESCR=metadata.get("description", ""),
    )


def _integer_charges(charges):
    charges = np.asarray(charges, dtype=float)
    whole = np.round(charges)
    if np.any(np.abs(charges - whole) > 1e-6):
        k = int(np.flatnonzero(np.abs(charges - whole) > 1e-6)[0])
        raise ValueError(f"frame {k} has a total charge of {charges[k]!r} e, not a whole number")
    return whole.astype(np.int8)


def _load(name, include_broken):
    ref = resources.files("mlmlearn.datasets").joinpath("data", f"{name}.npz")
    if not ref.is_file():  # pragma: no cover - a broken installation
        raise FileNotFoundError(f"bundled data set {name!r} is missing from {os.fspath(ref)}")
    with resources.as_file(ref) as path:
        return load_archive(path, include_broken=include_broken)


def load_alkanes(*, include_broken=False):
    """Linear alkanes C2H6…C7H16 with GFN2-xTB energies and forces (paper III protocol).

    Three independent 1000-step NVE (velocity Verlet) runs per molecule from a
    750 K Maxwell–Boltzmann start, 1.5 fs steps, every step kept; runs 1–2
    are ``split == "train"``, run 3 ``"test"``. No frame is broken.

    Parameters
    ----------
    include_broken : bool, default=False
        Also return the frames with a broken bond or a detached fragment
        (:func:`frame_integrity`: an H more than 1.6 Å from every C, a
        thiolate C off its S, or a molecule in pieces). They are valid xTB
        data of another chemical system, and the package's models refuse
        some of them, so the default leaves them out.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``frames`` (list of ase.Atoms with energy in eV and forces in eV/Å as
        single-point results, the total charge as ``info["charge"]`` and as
        initial charges summing to it — what tblite's ASE calculator reads —
        and ``info`` keys ``run``, ``step``, ``temperature_K``); per-frame
        arrays ``energy``, ``run`` (index into ``run_names``), ``step``,
        ``temperature_K``, ``split``, ``charge`` (e), ``intact`` (bool),
        ``problems`` (what is broken, ``""`` if intact) and ``index`` (the
        frame's position in the archive); ``n_broken`` (broken frames in the
        archive, returned or not); ``metadata`` (the generation settings,
        package versions and cost) and ``DESCR``.

    Raises
    ------
    ModuleNotFoundError
        Without ase (mlmlearn's ``atoms`` extra), naming the extra.

    Notes
    -----
    The total charge is stored twice on each frame: as ``info["charge"]`` and
    as initial charges that put the *whole* charge on atom 0 (only their sum
    means anything to xTB). Removing atoms — ``del atoms[0]``, ``atoms[1:]``,
    ``atoms.pop(0)`` — drops atom 0's share with it: the initial charges then
    sum to 0 while ``info["charge"]`` keeps the old value, and a calculator that
    reads the initial charges (tblite's, xtb's) computes another charge state
    without a word (combining frames with ``+`` adds their sums the same way).
    After editing a frame, set its charge again (``info["charge"]`` and initial
    charges summing to it) or give the calculator ``charge=``. Reordering atoms
    keeps the sum. The alkanes are neutral, so only edits that combine them with
    charged structures change anything here; see :func:`load_au25` (charge −1).

    Examples
    --------
    >>> data = load_alkanes()
    >>> len(data.frames), sorted(set(data.split.tolist())), data.n_broken
    (18018, ['test', 'train'], 0)
    """
    return _load("alkanes", include_broken)


def load_gold_thiolate_rings(*, include_broken=False):
    """Au4(SCH3)4…Au8(SCH3)8 rings, GFN2-xTB Langevin MD at 300, 600 and 900 K.

    Start structures from :func:`gold_thiolate_ring`; see ``metadata`` for the
    exact settings. Returns a Bunch as :func:`load_alkanes` (every run is
    ``"train"``). In 38 of the 3 015 frames (Au5 at 900 K, steps 316–400) a
    hydrogen has left its methyl; they are left out unless ``include_broken``.

    Notes
    -----
    Frames are neutral; ``info["charge"]`` and the initial charges (the whole
    charge on atom 0) are kept consistent only as loaded, see the Notes of
    :func:`load_alkanes` before removing atoms or combining frames.

    Examples
    --------
    >>> data = load_gold_thiolate_rings()
    >>> sorted({f.get_chemical_formula() for f in data.frames})[:2]
    ['C4H12Au4S4', 'C5H15Au5S5']
    >>> len(data.frames), data.n_broken
    (2977, 38)
    """
    return _load("gold_thiolate_rings", include_broken)


def load_au25(*, include_broken=False):
    """Au25(SCH3)18⁻ heated from 300 K to 1500 K by GFN1-xTB Langevin MD.

    One run; frames are ordered by time, so the hot end (where staples
    deform) is last — :func:`logarithmic_indices` samples it densely. Returns a
    Bunch as :func:`load_alkanes`; every frame has charge −1. One frame (step
    838, a C–H stretched to 1.65 Å) is left out unless ``include_broken``.

    Notes
    -----
    The charge −1 sits on atom 0 (a gold atom) as its initial charge, and in
    ``info["charge"]``. Removing atom 0 (``del atoms[0]``, ``atoms[1:]``) leaves
    initial charges summing to 0 while ``info["charge"]`` still says −1, so
    tblite's or xtb's calculator, which reads the initial charges, computes a
    neutral system without a word. After removing or adding atoms, set the
    charge again, e.g. ``atoms.set_initial_charges([q] + [0] * (len(atoms) - 1))``
    and ``atoms.info["charge"] = q``, or pass ``charge=q`` to the calculator.
    See :func:`load_alkanes`'s Notes.

    Examples
    --------
    >>> data = load_au25()
    >>> data.frames[0].get_chemical_formula(), data.frames[0].info["charge"]
    ('C18H54Au25S18', -1)
    >>> len(data.frames), data.n_broken
    (600, 1)
    """
    return _load("au25", include_broken)
