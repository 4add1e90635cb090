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

__all__ = [
    "AU25_RUNS",
    "KINDS",
    "isolated_atom_energies",
    "load_alkanes",
    "load_gold_thiolate_rings",
    "load_au25",
    "pack",
]

#: What the ring and Au25 loaders' ``kind`` selects: MD frames, frames of reference
#: relaxation paths, frames found by active learning (rings only), or all of them.
KINDS = ("md", "relaxation", "active", "all")

#: The archive of reference relaxations of each MD data set.
_RELAXATIONS = {
    "gold_thiolate_rings": "gold_thiolate_ring_relaxations",
    "au25": "au25_relaxations",
}

#: The archive of active-learning frames of each MD data set that has one.
_ACTIVE = {"gold_thiolate_rings": "gold_thiolate_ring_active"}


def pack(paths, output, *, metadata):
    """Pack MD trajectories, one per run, into the archive ``output``.

    Parameters
    ----------
    paths : sequence of (str, path-like or sequence of ase.Atoms)
        One run each: an extxyz trajectory written by :func:`run_md`, or its
        frames (e.g. a run of an archive loaded with ``include_broken=True``,
        to repack it beside new runs). Every frame needs energy and forces as
        stored results and ``info`` keys ``step`` and ``temperature_K``; its
        total charge is ``info["charge"]``, else the sum of its initial charges.
    output : str or path-like
        The ``.npz`` archive to write.
    metadata : dict
        Stored as JSON beside the arrays. Must hold ``runs``: one dict per
        entry of ``paths``, in the same order, with at least ``name`` (and
        optionally ``split``, ``"train"`` by default). A copy is stored, with
        the rule of :func:`frame_integrity` (``integrity_rule``), in which each
        run also gets ``n_frames``, its integrity check (``n_broken`` and
        ``broken_steps``, :func:`frame_integrity`) and the statistics of its
        intact frames' force magnitudes (``force_magnitude_eV_per_A``: ``mean``,
        ``p99_9``, ``max``, ``max_component``, ``n_above_10``).

    Returns
    -------
    output : str or path-like
        As given.

    Raises
    ------
    ValueError
        If ``metadata["runs"]`` has not one entry per run, or a frame's total
        charge is not a whole number.
    """
    from ._integrity import BOND_FACTOR, REQUIRED_PARTNERS, _integrity
    from ._md import read_frames

    if len(metadata.get("runs", ())) != len(paths):
        raise ValueError("metadata['runs'] needs one entry per trajectory in paths")
    metadata = json.loads(json.dumps(metadata))  # a copy; tuples become lists, as stored
    metadata["integrity_rule"] = {
        "bond_factor": BOND_FACTOR,
        "required_partners": REQUIRED_PARTNERS,
    }
    numbers, positions, forces = [], [], []
    energy, n_atoms, run, step, temperature, charge = [], [], [], [], [], []
    for r, path in enumerate(paths):
        frames = read_frames(path) if isinstance(path, (str, os.PathLike)) else list(path)
        first = len(energy)
        for frame in frames:
            numbers.append(frame.numbers.astype(np.int8))
            positions.append(frame.positions)
            forces.append(frame.get_forces().astype(np.float32))
            energy.append(frame.get_potential_energy())
            n_atoms.append(len(frame))
            run.append(r)
            step.append(frame.info["step"])
            temperature.append(frame.info["temperature_K"])
            charge.append(frame.info.get("charge", frame.get_initial_charges().sum()))
        intact, _ = _integrity(numbers[first:], positions[first:])
        metadata["runs"][r].update(
            n_frames=len(frames),
            n_broken=int((~intact).sum()),
            broken_steps=[int(step[first + k]) for k in np.flatnonzero(~intact)],
            force_magnitude_eV_per_A=_force_statistics(
                [f for f, ok in zip(forces[first:], intact, strict=True) if ok]
            ),
        )
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


def _force_statistics(forces):
    """Magnitude statistics (eV/Å) of the per-frame force arrays ``forces`` (n_atoms, 3)."""
    if not forces:
        return {}
    f = np.concatenate(forces).astype(np.float64)
    norm = np.linalg.norm(f, axis=1)
    return {
        "mean": round(float(norm.mean()), 4),
        "p99_9": round(float(np.quantile(norm, 0.999)), 4),
        "max": round(float(norm.max()), 4),
        "max_component": round(float(np.abs(f).max()), 4),
        "n_above_10": int((norm > 10.0).sum()),
    }


def load_archive(path, *, include_broken=False, runs=None):
    """Load an archive written by :func:`pack` (see :func:`load_alkanes` for the result).

    Frames with a broken bond or a detached fragment (:func:`frame_integrity`)
    are left out unless ``include_broken`` is true. ``runs`` (a sequence of run
    names, default all) selects runs; ``run_names`` then lists the selected
    runs in archive order, ``run`` indexes it, and ``n_broken`` counts the
    broken frames of the selected runs.

    Raises
    ------
    ValueError
        If ``runs`` names a run the archive does not hold (the message lists them).
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
    all_names = [r["name"] for r in metadata["runs"]]
    if runs is None:
        chosen = np.arange(len(all_names))
    else:
        runs = [runs] if isinstance(runs, str) else list(runs)
        unknown = [name for name in runs if name not in all_names]
        if unknown:
            raise ValueError(f"runs={runs!r}: {unknown} not among this archive's runs {all_names}")
        chosen = np.array(sorted({all_names.index(name) for name in runs}), dtype=int)
    renumber = np.full(len(all_names), -1)
    renumber[chosen] = np.arange(len(chosen))
    run_names = [all_names[r] for r in chosen]

    n_frames = len(arrays["energy"])
    bounds = np.concatenate([[0], np.cumsum(arrays["n_atoms"])])
    selected = np.flatnonzero(np.isin(arrays["run"], chosen))
    numbers = {k: arrays["numbers"][bounds[k] : bounds[k + 1]] for k in selected}
    positions = {k: arrays["positions"][bounds[k] : bounds[k + 1]] for k in selected}
    if "charge" in arrays:
        charge = arrays["charge"].astype(np.int64)
    else:  # archives packed before frames carried their charge
        charge = np.full(n_frames, int(metadata.get("settings", {}).get("charge", 0)))
    intact = np.zeros(n_frames, dtype=bool)
    problems = [""] * n_frames
    ok, reasons = _integrity([numbers[k] for k in selected], [positions[k] for k in selected])
    intact[selected] = ok
    for k, reason in zip(selected, reasons, strict=True):
        problems[k] = reason
    keep = selected if include_broken else selected[intact[selected]]

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
            run=all_names[arrays["run"][k]],
            step=int(arrays["step"][k]),
            temperature_K=float(arrays["temperature_K"][k]),
        )
        frames.append(atoms)
    split = np.array([metadata["runs"][r].get("split", "train") for r in arrays["run"]])
    return Bunch(
        frames=frames,
        energy=arrays["energy"][keep],
        run=renumber[arrays["run"][keep]],
        run_names=run_names,
        step=arrays["step"][keep],
        temperature_K=arrays["temperature_K"][keep].astype(np.float64),
        split=split[keep],
        charge=charge[keep],
        intact=intact[keep],
        problems=[problems[k] for k in keep],
        index=keep,
        n_broken=int((~intact[selected]).sum()),
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


def _archive(name):
    ref = resources.files("mlmlearn.datasets").joinpath("data", f"{name}.npz")
    if not ref.is_file():  # pragma: no cover - a broken installation
        raise FileNotFoundError(f"bundled data set {name!r} is missing from {os.fspath(ref)}")
    return ref


def _load(name, include_broken, runs=None):
    ref = _archive(name)
    with resources.as_file(ref) as path:
        return load_archive(path, include_broken=include_broken, runs=runs)


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


def load_gold_thiolate_rings(*, kind="md", include_broken=False):
    """Au4(SCH3)4…Au8(SCH3)8 rings by GFN2-xTB: Langevin MD and reference relaxations.

    ``kind="md"`` (the default, what this loader has always returned): Langevin
    MD at 300, 600 and 900 K from :func:`gold_thiolate_ring` starts; every run
    is ``"train"``. In 38 of the 3 015 frames (Au5 at 900 K, steps 316–400) a
    hydrogen has left its methyl; they are left out unless ``include_broken``.

    ``kind="relaxation"``: ASE BFGS paths to fmax 0.02 eV/Å, every step kept
    (recipe :data:`~mlmlearn.datasets._recipes.RING_RELAXATIONS`), started from
    every 20th frame of the run ``"Au5(SCH3)5_600K"`` (steps 0, 40, …, 400; the
    held-out test run, ``split == "test"``), from the built rings (``source_run``
    ``"built"``, ``source_step`` -1) and from the frames at steps 400 and 200 of
    every other MD run. Each
    path is one entry of ``run_names``; ``metadata["runs"]`` gives its source,
    whether and how it ended (``status``: ``"converged"``, ``"max_steps"`` or
    ``"diverged"``), the largest force reached and any failed single points.
    GFN2-xTB pulls the Au6–Au8 rings, once nearly relaxed, into a collapse of
    their gold atoms (an artifact of the method, see the data README): such
    paths are ``"diverged"`` and hold their frames up to the one with the
    smallest largest force.

    ``kind="active"``: GFN2-xTB frames found by active learning (recipe
    :data:`~mlmlearn.datasets._recipes.RING_ACTIVE`,
    :func:`~mlmlearn.applications.active_learning.active_learning`): 600 K
    Langevin MD on :class:`~mlmlearn.forcefield.EMLMPotential` trained on the
    MD and relaxation frames without the held-out run, from the frame at step
    200 of six training runs; each frame is where the potential's forces were
    more than 0.2 eV/Å (RMSE) off GFN2-xTB's, one run each, its
    ``source_run``/``source_step`` the MD start, ``step`` the MD steps from it,
    ``temperature_K`` 600 and ``status`` ``"active"``. They hold what MD and
    relaxations never visit (the onsets of unphysical collapses the potential
    would otherwise slide into). ``metadata["history"]`` gives each round's
    checks and errors. ``kind="all"``: MD frames, then relaxation frames, then
    active-learning frames; :func:`training_mask` picks the frames a potential
    trains on.

    Parameters
    ----------
    kind : {"md", "relaxation", "active", "all"}, default="md"
        Which frames.
    include_broken : bool, default=False
        See :func:`load_alkanes`.

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`load_alkanes`, with per-frame ``kind`` (``"md"`` or
        ``"relaxation"``), ``source_run`` (the MD run a relaxation started from,
        ``"built"`` for a built ring, an MD frame's own run) and ``source_step``
        (its step; -1 for built), and ``status``: ``"md"`` for MD frames, for
        relaxation frames the ``status`` of their path (``"converged"``,
        ``"max_steps"`` or ``"diverged"``), ``"active"`` for active-learning
        frames. Relaxation frames have ``step`` = optimizer step and
        ``temperature_K`` 0. ``run`` indexes ``run_names`` (MD runs, then
        relaxation paths, then active-learning frames), ``index`` is the frame's
        position in the archive of its kind, and ``metadata`` is the archive's
        (for ``"all"``, a dict ``{"md": ..., "relaxation": ..., "active": ...}``).
        The frames' ``info`` also holds ``kind``, ``source_run`` and ``source_step``.

    Raises
    ------
    ValueError
        If ``kind`` is not one of ``KINDS``.
    ModuleNotFoundError
        Without ase (mlmlearn's ``atoms`` extra), naming the extra.

    Notes
    -----
    The active-learning frames were found by a potential trained with the held-out
    run ``"Au5(SCH3)5_600K"`` left out but with the other Au5 runs in; leave the
    Au5 frames out (``len(frame) == 30``) when holding out the ring size.

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

    Training frames without the held-out run, relaxations and active-learning
    frames included:

    >>> data = load_gold_thiolate_rings(kind="all")
    >>> train = data.source_run != "Au5(SCH3)5_600K"
    >>> sorted(set(data.kind[train].tolist()))
    ['active', 'md', 'relaxation']
    >>> bool(np.all(data.temperature_K[data.kind == "relaxation"] == 0.0))
    True
    """
    return _load_kind("gold_thiolate_rings", kind, include_broken)


#: The runs of the Au25 archive that :func:`load_au25`'s ``runs`` shortcuts name.
AU25_RUNS = {
    "heating": ("Au25(SCH3)18_heating",),
    "fixed_temperature": ("Au25(SCH3)18_300K", "Au25(SCH3)18_500K"),
}


def load_au25(*, runs="heating", kind="md", include_broken=False):
    """Au25(SCH3)18⁻ by GFN1-xTB: Langevin MD runs and reference relaxations.

    Three independent runs from the optimized cluster, every frame charge −1:

    ========================  ==================  =====  ======  ======  =======
    run (``run_names``)       target temperature  seed   frames  broken  split
    ========================  ==================  =====  ======  ======  =======
    ``Au25(SCH3)18_heating``  300 → 1500 K ramp   25     601     1       "train"
    ``Au25(SCH3)18_300K``     300 K               25300  351     0       "test"
    ``Au25(SCH3)18_500K``     500 K               25500  351     0       "test"
    ========================  ==================  =====  ======  ======  =======

    The heating run is one trajectory in time order, so the hot end (where
    staples deform) is last — :func:`logarithmic_indices` samples it densely —
    and any split of it is autocorrelated (neighbouring frames 3 fs apart) or a
    temperature extrapolation. The fixed-temperature runs (700 steps of 1.5 fs,
    every second kept) have their own start velocities and thermostat noise:
    a model can be tested on a run it never saw. Their ``split`` is ``"test"``
    (train on the heating run, which spans their temperatures), and
    ``runs="all"`` with :class:`~sklearn.model_selection.GroupKFold` over
    ``run`` holds out each run in turn (see the example). One heating frame
    (step 838, a C–H stretched to 1.65 Å) is left out unless ``include_broken``.

    ``kind="relaxation"`` gives ASE BFGS paths of the cluster to fmax
    0.05 eV/Å, every step kept (recipe
    :data:`~mlmlearn.datasets._recipes.AU25_RELAXATIONS`), started from frames
    of the heating run and of the 500 K run, never of the 300 K run (the
    independent test run); their ``split`` is ``"train"``. ``kind="all"``
    gives the MD frames of ``runs`` followed by every relaxation path.

    Parameters
    ----------
    runs : {"heating", "fixed_temperature", "all"} or sequence of str, default="heating"
        Which MD runs: the heating run (600 intact frames, what this loader has
        always returned), the two fixed-temperature runs (702 frames), all
        three (1 302 frames), or run names from the table. It selects MD frames
        only: ``kind="relaxation"`` and ``"all"`` always give every relaxation
        path (select them by ``source_run``).
    kind : {"md", "relaxation", "all"}, default="md"
        Which frames, as in :func:`load_gold_thiolate_rings` (Au25 has no
        active-learning frames; ``"active"`` raises ValueError).
    include_broken : bool, default=False
        See :func:`load_alkanes`.

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`load_alkanes`: ``run_names`` lists the selected runs in the
        table's order and ``run`` indexes it; ``temperature_K`` is the
        thermostat's target (the kinetic temperature runs above it, see the
        data README); ``n_broken`` counts the broken frames of the selected runs;
        per-frame ``kind``, ``source_run`` and ``source_step`` as in
        :func:`load_gold_thiolate_rings`.

    Raises
    ------
    ValueError
        If ``runs`` is neither a shortcut nor run names of the table, or
        ``kind`` is not one of ``KINDS``.
    ModuleNotFoundError
        Without ase (mlmlearn's ``atoms`` extra), naming the extra.

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

    Every run held out once, models trained on the other two:

    >>> from sklearn.model_selection import GroupKFold
    >>> from mlmlearn.atoms import AtomicEnvironments
    >>> data = load_au25(runs="all")
    >>> data.run_names
    ['Au25(SCH3)18_heating', 'Au25(SCH3)18_300K', 'Au25(SCH3)18_500K']
    >>> env = AtomicEnvironments(data.frames, species="S", groups=data.run)
    >>> for train, test in GroupKFold(n_splits=3).split(env, groups=env.groups):
    ...     print(data.run_names[env.groups[test][0]], len(test), "test,", len(train), "train")
    Au25(SCH3)18_heating 10800 test, 12636 train
    Au25(SCH3)18_500K 6318 test, 17118 train
    Au25(SCH3)18_300K 6318 test, 17118 train

    Relaxation paths end with smaller forces than they start:

    >>> relax = load_au25(kind="relaxation")
    >>> sorted(set(relax.source_run.tolist()))
    ['Au25(SCH3)18_500K', 'Au25(SCH3)18_heating']
    >>> first, last = relax.frames[0], relax.frames[relax.metadata["runs"][0]["n_frames"] - 1]
    >>> bool(np.abs(last.get_forces()).max() < np.abs(first.get_forces()).max())
    True
    """
    if isinstance(runs, str):
        if runs == "all":
            names = None
        elif runs in AU25_RUNS:
            names = AU25_RUNS[runs]
        elif runs in AU25_RUNS["heating"] + AU25_RUNS["fixed_temperature"]:
            names = [runs]
        else:
            raise ValueError(
                f"runs={runs!r} is not one of 'heating', 'fixed_temperature', 'all' nor a run "
                f"name {[*AU25_RUNS['heating'], *AU25_RUNS['fixed_temperature']]}"
            )
    else:
        names = list(runs)
    return _load_kind("au25", kind, include_broken, runs=names)


def _load_kind(name, kind, include_broken, runs=None):
    """MD frames of data set ``name`` (of ``runs``), its relaxation frames, its
    active-learning frames, or all of them (in that order)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if kind == "active" and name not in _ACTIVE:
        raise ValueError(f"kind='active': the {name} data have no active-learning frames")
    parts = {}
    if kind in ("md", "all"):
        md = _load(name, include_broken, runs=runs)
        md.kind = np.full(len(md.frames), "md")
        md.source_run = np.array([md.run_names[r] for r in md.run], dtype=str)
        md.source_step = md.step.copy()
        md.status = np.full(len(md.frames), "md")
        parts["md"] = md
    for part, archives in (("relaxation", _RELAXATIONS), ("active", _ACTIVE)):
        if kind not in (part, "all") or name not in archives:
            continue
        data = _load(archives[name], include_broken)
        runs_meta = {r["name"]: r for r in data.metadata["runs"]}
        ordered = [runs_meta[n] for n in data.run_names]
        data.kind = np.full(len(data.frames), part)
        data.source_run = np.array([ordered[r]["source_run"] for r in data.run], dtype=str)
        data.source_step = np.array(
            [ordered[r]["source_step"] for r in data.run], dtype=data.step.dtype
        )
        data.status = np.array([ordered[r].get("status", part) for r in data.run], dtype=str)
        parts[part] = data
    for part in parts.values():
        for atoms, k, run, step in zip(
            part.frames, part.kind, part.source_run, part.source_step, strict=True
        ):
            atoms.info.update(kind=str(k), source_run=str(run), source_step=int(step))
    if len(parts) == 1:
        return next(iter(parts.values()))
    return _concatenate(parts)


def _concatenate(parts):
    """One Bunch of the frames of ``parts`` (a dict of kind to Bunch), in order."""
    from sklearn.utils import Bunch

    arrays = ("energy", "step", "temperature_K", "split", "charge", "intact", "index", "kind",
              "source_run", "source_step", "status")
    bunches = list(parts.values())
    out = {key: np.concatenate([b[key] for b in bunches]) for key in arrays}
    offsets = np.cumsum([0] + [len(b.run_names) for b in bunches[:-1]])
    return Bunch(
        frames=[f for b in bunches for f in b.frames],
        run=np.concatenate([b.run + o for b, o in zip(bunches, offsets, strict=True)]),
        run_names=[n for b in bunches for n in b.run_names],
        problems=[p for b in bunches for p in b.problems],
        n_broken=sum(b.n_broken for b in bunches),
        metadata={k: b.metadata for k, b in parts.items()},
        DESCR="\n\n".join(b.DESCR for b in bunches),
        **out,
    )


def isolated_atom_energies(method="GFN2-xTB"):
    """Energies (eV) of isolated neutral H, C, S and Au atoms, as stored with the bundled data.

    Read from the metadata of the relaxation archive computed with ``method``
    (GFN2-xTB: the rings'; GFN1-xTB: Au25's), never computed here. Each atom is
    a tblite single point in vacuum, neutral, in its ground-state spin
    multiplicity (H and Au doublets, C and S triplets; no spin polarization),
    at tblite's default electronic temperature of 300 K — recipe
    :data:`~mlmlearn.datasets._recipes.ISOLATED_ATOMS`, recomputed by
    :func:`~mlmlearn.datasets._recipes.compute_isolated_atom_energies`.
    Subtracting ``sum(energies[element] for each atom)`` from a structure's
    energy gives its atomization energy, which fixes the per-element energy
    offsets a model fitted on (AuSCH3)n compositions alone cannot identify.

    Parameters
    ----------
    method : {"GFN2-xTB", "GFN1-xTB"}, default="GFN2-xTB"

    Returns
    -------
    energies : dict of str to float
        Element symbol to energy in eV.

    Raises
    ------
    ValueError
        If ``method`` is not one of the two.

    Examples
    --------
    >>> energies = isolated_atom_energies("GFN2-xTB")
    >>> sorted(energies)
    ['Au', 'C', 'H', 'S']
    >>> round(energies["H"], 3)
    -10.707
    """
    archives = {"GFN2-xTB": "gold_thiolate_ring_relaxations", "GFN1-xTB": "au25_relaxations"}
    if method not in archives:
        raise ValueError(f"method={method!r} is not one of {sorted(archives)}")
    with resources.as_file(_archive(archives[method])) as path, np.load(path) as data:
        metadata = json.loads(str(data["metadata"]))
    stored = metadata["isolated_atom_energies"]
    if stored["method"] != method:  # pragma: no cover - a mispacked archive
        raise ValueError(f"{archives[method]}.npz holds {stored['method']} atoms, not {method}")
    return {element: float(e) for element, e in stored["energies_eV"].items()}
