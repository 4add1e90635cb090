"""The bundled xTB data sets: packing MD trajectories into archives and loading them.

An archive is one compressed ``.npz`` holding every frame of every run:
per-atom ``numbers`` (int8), ``positions`` (float64, Å) and ``forces``
(float32, eV/Å), per-frame ``energy`` (float64, eV), ``n_atoms``, ``run``,
``step`` and target ``temperature_K``, and a JSON ``metadata`` string saying
how the data were generated.
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
    energy, n_atoms, run, step, temperature = [], [], [], [], []
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
        metadata=np.array(json.dumps(metadata, indent=1)),
    )
    return output


def load_archive(path):
    """Load an archive written by :func:`pack` (see :func:`load_alkanes` for the result)."""
    from .._optional import import_optional

    import_optional("ase", purpose="the bundled data sets")  # names the extra if missing
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from sklearn.utils import Bunch

    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    metadata = json.loads(str(arrays["metadata"]))
    bounds = np.concatenate([[0], np.cumsum(arrays["n_atoms"])])
    run_names = [r["name"] for r in metadata["runs"]]
    frames = []
    for k in range(len(arrays["energy"])):
        a, b = bounds[k], bounds[k + 1]
        atoms = Atoms(arrays["numbers"][a:b], positions=arrays["positions"][a:b])
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
        energy=arrays["energy"],
        run=arrays["run"],
        run_names=run_names,
        step=arrays["step"],
        temperature_K=arrays["temperature_K"].astype(np.float64),
        split=split,
        metadata=metadata,
        DESCR=metadata.get("description", ""),
    )


def _load(name):
    ref = resources.files("mlmlearn.datasets").joinpath("data", f"{name}.npz")
    if not ref.is_file():  # pragma: no cover - a broken installation
        raise FileNotFoundError(f"bundled data set {name!r} is missing from {os.fspath(ref)}")
    with resources.as_file(ref) as path:
        return load_archive(path)


def load_alkanes():
    """Linear alkanes C2H6…C7H16 with GFN2-xTB energies and forces (paper III protocol).

    Three independent 1000-step NVE (velocity Verlet) runs per molecule from a
    750 K Maxwell–Boltzmann start, 1.5 fs steps, every step kept; runs 1–2
    are ``split == "train"``, run 3 ``"test"``.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``frames`` (list of ase.Atoms with energy in eV and forces in eV/Å as
        single-point results, and ``info`` keys ``run``, ``step``,
        ``temperature_K``), per-frame arrays ``energy``, ``run`` (index into
        ``run_names``), ``step``, ``temperature_K``, ``split``; ``metadata``
        (the generation settings, package versions and cost) and ``DESCR``.

    Examples
    --------
    >>> data = load_alkanes()
    >>> len(data.frames), sorted(set(data.split.tolist()))
    (18018, ['test', 'train'])
    """
    return _load("alkanes")


def load_gold_thiolate_rings():
    """Au4(SCH3)4…Au8(SCH3)8 rings, GFN2-xTB Langevin MD at 300, 600 and 900 K.

    Start structures from :func:`gold_thiolate_ring`; see ``metadata`` for the
    exact settings. Returns a Bunch as :func:`load_alkanes` (every run is
    ``"train"``).

    Examples
    --------
    >>> data = load_gold_thiolate_rings()
    >>> sorted({f.get_chemical_formula() for f in data.frames})[:2]
    ['C4H12Au4S4', 'C5H15Au5S5']
    """
    return _load("gold_thiolate_rings")


def load_au25():
    """Au25(SCH3)18⁻ heated from 300 K to 1500 K by GFN1-xTB Langevin MD.

    One run; frames are ordered by time, so the hot end (where staples
    deform) is last — :func:`logarithmic_indices` samples it densely. Returns a
    Bunch as :func:`load_alkanes`.

    Examples
    --------
    >>> data = load_au25()
    >>> data.frames[0].get_chemical_formula()
    'C18H54Au25S18'
    """
    return _load("au25")
