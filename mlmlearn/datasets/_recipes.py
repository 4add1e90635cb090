"""How the bundled reference data were generated, as functions anyone can rerun.

Each recipe writes one extxyz trajectory per MD run into a directory (resumable:
rerunning continues unfinished runs) and returns the list of files. The
settings below are exactly the ones of the shipped data; :func:`pack` turns
the trajectories into the compressed archive the loaders read.

The xTB calculations use tblite (mlmlearn's ``xtb`` extra: ``pip install ".[xtb]"`` in
the source tree).
"""

import os

import numpy as np

__all__ = [
    "ALKANES",
    "RINGS",
    "AU25",
    "AU25_FIXED_TEMPERATURE",
    "generate_alkanes",
    "generate_gold_thiolate_rings",
    "generate_au25",
    "generate_au25_fixed_temperature",
    "RING_RELAXATIONS",
    "AU25_RELAXATIONS",
    "ISOLATED_ATOMS",
    "ring_relaxation_starts",
    "au25_relaxation_starts",
    "generate_gold_thiolate_ring_relaxations",
    "generate_au25_relaxations",
    "compute_isolated_atom_energies",
    "RING_ACTIVE",
    "ring_active_learning_setup",
    "generate_gold_thiolate_ring_active",
]

#: Paper III's protocol: three independent NVE runs per molecule, runs 1–2 train, run 3 test.
ALKANES = {
    "method": "GFN2-xTB",
    "n_carbons": (2, 3, 4, 5, 6, 7),
    "runs": (1, 2, 3),
    "integrator": "verlet",
    "temperature_K": 750.0,
    "timestep_fs": 1.5,
    "n_steps": 1000,
    "write_interval": 1,
    "test_runs": (3,),
}

#: Au_n(SCH3)_n rings built as in paper IV, Langevin MD at three temperatures.
RINGS = {
    "method": "GFN2-xTB",
    "n_gold": (4, 5, 6, 7, 8),
    "temperatures_K": (300.0, 600.0, 900.0),
    "integrator": "langevin",
    "friction_per_fs": 0.01,
    "timestep_fs": 1.5,
    "n_steps": 400,
    "write_interval": 2,
}

#: Au25(SCH3)18- heated by Langevin MD so that the staples deform.
AU25 = {
    "method": "GFN1-xTB",
    "charge": -1,
    "integrator": "langevin",
    "friction_per_fs": 0.01,
    "temperature_K": (300.0, 1500.0),
    "timestep_fs": 1.5,
    "n_steps": 1200,
    "write_interval": 2,
    "seed": 25,
}

#: Independent Au25(SCH3)18- runs at fixed temperatures, the runs a model can be tested on
#: without ever having seen them (the heating run is one autocorrelated trajectory). Run
#: ``k`` is held at ``temperatures_K[k]`` with the seed ``seeds[k]`` (25000 + T).
AU25_FIXED_TEMPERATURE = {
    "method": "GFN1-xTB",
    "charge": -1,
    "integrator": "langevin",
    "friction_per_fs": 0.01,
    "temperatures_K": (300.0, 500.0),
    "seeds": (25300, 25500),
    "timestep_fs": 1.5,
    "n_steps": 700,
    "write_interval": 2,
}


def _tblite(method, charge=0):
    from .._optional import import_optional

    TBLite = import_optional("tblite.ase", purpose="xTB reference data").TBLite
    return TBLite(method=method, charge=charge, verbosity=0)


def generate_alkanes(directory, *, settings=ALKANES, verbose=0):
    """Run paper III's alkane MD protocol with GFN2-xTB; one extxyz file per run.

    Run ``r`` of molecule CₙH₂ₙ₊₂ is seeded with ``1000 * n + r``.
    """
    from ._builders import linear_alkane
    from ._md import run_md

    os.makedirs(directory, exist_ok=True)
    paths = []
    for n in settings["n_carbons"]:
        for run in settings["runs"]:
            path = os.path.join(directory, f"C{n}H{2 * n + 2}_run{run}.extxyz")
            run_md(
                linear_alkane(n),
                _tblite(settings["method"]),
                path,
                n_steps=settings["n_steps"],
                timestep=settings["timestep_fs"],
                temperature=settings["temperature_K"],
                integrator=settings["integrator"],
                write_interval=settings["write_interval"],
                seed=1000 * n + run,
                verbose=verbose,
            )
            paths.append(path)
    return paths


def generate_gold_thiolate_rings(directory, *, settings=RINGS, verbose=0):
    """Langevin MD of Au_n(SCH3)_n rings with GFN2-xTB; one extxyz file per (n, T).

    The run of ring ``n`` at temperature ``T`` is seeded with ``10000 * n + T``.
    """
    from ._builders import gold_thiolate_ring
    from ._md import run_md

    os.makedirs(directory, exist_ok=True)
    paths = []
    for n in settings["n_gold"]:
        for temperature in settings["temperatures_K"]:
            path = os.path.join(directory, f"Au{n}(SCH3){n}_{temperature:.0f}K.extxyz")
            run_md(
                gold_thiolate_ring(n),
                _tblite(settings["method"]),
                path,
                n_steps=settings["n_steps"],
                timestep=settings["timestep_fs"],
                temperature=temperature,
                integrator=settings["integrator"],
                friction=settings["friction_per_fs"],
                write_interval=settings["write_interval"],
                seed=10000 * n + int(temperature),
                verbose=verbose,
            )
            paths.append(path)
    return paths


def _read_start(start, purpose):
    """Read a start structure, dropping ``info`` keys ASE makes of a plain xyz comment line."""
    from .._optional import import_optional

    atoms = import_optional("ase.io", purpose=purpose).read(start)
    atoms.info = {}  # e.g. "Au25(SCH3)18 optimized structure" -> {"Au25(SCH3)18": True, ...}
    return atoms


def generate_au25(start, directory, *, settings=AU25, verbose=0):
    """Heat Au25(SCH3)18⁻ from ``start`` (an ASE-readable file) with GFN1-xTB Langevin MD.

    GFN2-xTB does not converge on the 13-atom gold core; GFN1-xTB does. The
    anion is used because it is the closed-shell, experimentally stable charge
    state (the neutral cluster has an odd electron count). Writes
    ``Au25(SCH3)18_heating.extxyz`` into ``directory``.
    """
    from ._md import run_md

    atoms = _read_start(start, "generate_au25")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "Au25(SCH3)18_heating.extxyz")
    run_md(
        atoms,
        _tblite(settings["method"], charge=settings["charge"]),
        path,
        n_steps=settings["n_steps"],
        timestep=settings["timestep_fs"],
        temperature=tuple(settings["temperature_K"]),
        integrator=settings["integrator"],
        friction=settings["friction_per_fs"],
        write_interval=settings["write_interval"],
        seed=settings["seed"],
        verbose=verbose,
    )
    return [path]


def generate_au25_fixed_temperature(
    start, directory, *, settings=AU25_FIXED_TEMPERATURE, temperatures=None, verbose=0
):
    """Independent GFN1-xTB Langevin runs of Au25(SCH3)18⁻ at fixed temperatures.

    Each run starts from ``start`` (an ASE-readable file; the shipped runs start
    from the optimized cluster, as the heating run does) with Maxwell–Boltzmann
    velocities at its temperature drawn with its own seed, and is held there by
    the Langevin thermostat. Runs are independent of each other and of the
    heating run (other seeds, other noise), so a model trained on the other runs
    can be tested on one it never saw. Writes ``Au25(SCH3)18_<T>K.extxyz`` per run
    into ``directory``; resumable like every recipe.

    Parameters
    ----------
    start : str or path-like
        Start structure, any file ASE reads (positions in Å).
    directory : str or path-like
        Where the trajectories are written (and resumed from).
    settings : dict, default=AU25_FIXED_TEMPERATURE
        ``temperatures_K`` and ``seeds`` (one per run), ``n_steps``,
        ``timestep_fs``, ``friction_per_fs``, ``write_interval``, ``method`` and
        ``charge``.
    temperatures : sequence of float, default=None
        Run only these of ``settings["temperatures_K"]`` (e.g. one per process,
        to use two cores); all by default.
    verbose : int, default=0
        A progress bar per run.

    Returns
    -------
    paths : list of str
        One trajectory per run, in the order of ``settings["temperatures_K"]``.

    Raises
    ------
    ValueError
        If ``settings`` has not one seed per temperature, or ``temperatures``
        names a temperature the settings do not have.
    """
    from ._md import run_md

    all_temperatures = [float(t) for t in settings["temperatures_K"]]
    seeds = list(settings["seeds"])
    if len(seeds) != len(all_temperatures):
        raise ValueError(
            f"settings has {len(seeds)} seeds for {len(all_temperatures)} temperatures "
            f"{all_temperatures}; give one seed per temperature"
        )
    chosen = all_temperatures if temperatures is None else [float(t) for t in temperatures]
    unknown = [t for t in chosen if t not in all_temperatures]
    if unknown:
        raise ValueError(
            f"temperatures={list(temperatures)!r}: {unknown} not among the settings' "
            f"temperatures_K {all_temperatures}"
        )
    atoms = _read_start(start, "generate_au25_fixed_temperature")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for temperature, seed in zip(all_temperatures, seeds, strict=True):
        if temperature not in chosen:
            continue
        path = os.path.join(directory, f"Au25(SCH3)18_{temperature:.0f}K.extxyz")
        run_md(
            atoms,
            _tblite(settings["method"], charge=settings["charge"]),
            path,
            n_steps=settings["n_steps"],
            timestep=settings["timestep_fs"],
            temperature=temperature,
            integrator=settings["integrator"],
            friction=settings["friction_per_fs"],
            write_interval=settings["write_interval"],
            seed=seed,
            verbose=verbose,
        )
        paths.append(path)
    return paths


#: Reference BFGS paths of the rings, every step kept, so that models see small forces.
#: Starts: every 20th stored frame of the held-out run (its steps 0, 40, ..., 400, the test
#: reference), the built rings, and frames of every other MD run at ``md_steps`` (the
#: nearest intact frame at or before each, as hot frames may be broken), in that order of
#: priority. A single point that fails (SCF not converged, or no result within
#: ``timeout_s``) is retried from the last good frame with the same Hessian and half the
#: failed step's largest displacement as ``maxstep`` (at least ``min_maxstep_A``), and the
#: path is given up after ``max_failures`` failures. A path whose largest force rises above
#: ``divergence_eV_per_A[1]`` after it had been below ``divergence_eV_per_A[0]`` is stopped
#: there ("diverged"): GFN2-xTB pulls some nearly relaxed Au6-Au8 rings into a collapse of
#: their gold atoms where the energy falls by eV per step under 5-20 eV/A forces until the
#: SCF fails (an artifact of the method on compact gold, see the data README).
RING_RELAXATIONS = {
    "method": "GFN2-xTB",
    "charge": 0,
    "calculator": {"electronic_temperature": 300.0, "max_iterations": 250},
    "optimizer": "BFGS",
    "fmax_eV_per_A": 0.02,
    "max_steps": 300,
    "maxstep_A": 0.1,
    "timeout_s": 120.0,
    "max_failures": 4,
    "min_maxstep_A": 0.005,
    "divergence_eV_per_A": (0.5, 2.0),
    "held_out_run": "Au5(SCH3)5_600K",
    "held_out_steps": tuple(range(0, 401, 40)),
    "n_gold": (4, 5, 6, 7, 8),
    "md_steps": (400, 200),
}

#: Reference BFGS paths of Au25(SCH3)18- (GFN1-xTB), from frames of the heating run and of
#: the 500 K run (never of the 300 K run, the independent test run). Failures as for
#: :data:`RING_RELAXATIONS`.
AU25_RELAXATIONS = {
    "method": "GFN1-xTB",
    "charge": -1,
    "calculator": {"electronic_temperature": 300.0, "max_iterations": 250},
    "optimizer": "BFGS",
    "fmax_eV_per_A": 0.05,
    "max_steps": 300,
    "maxstep_A": 0.1,
    "timeout_s": 600.0,
    "max_failures": 4,
    "min_maxstep_A": 0.005,
    "divergence_eV_per_A": (0.5, 2.0),
    "starts": (
        ("Au25(SCH3)18_500K", 700),
        ("Au25(SCH3)18_heating", 400),
        ("Au25(SCH3)18_heating", 800),
        ("Au25(SCH3)18_500K", 350),
    ),
}

#: Single atoms in vacuum: neutral, in their ground-state spin multiplicity (Hund's rule:
#: H and Au doublets, C and S triplets; tblite's ``multiplicity``, no spin polarization),
#: tblite's default electronic temperature (300 K) and accuracy.
ISOLATED_ATOMS = {
    "elements": ("H", "C", "S", "Au"),
    "multiplicity": {"H": 2, "C": 3, "S": 3, "Au": 2},
    "electronic_temperature": 300.0,
    "methods": ("GFN2-xTB", "GFN1-xTB"),
}


def _relaxation_calculator(settings):
    """A picklable factory of the tblite calculator of a relaxation recipe."""
    import functools

    from .._optional import import_optional

    TBLite = import_optional("tblite.ase", purpose="xTB reference data").TBLite
    return functools.partial(
        TBLite,
        method=settings["method"],
        charge=settings["charge"],
        verbosity=0,
        **settings.get("calculator", {}),
    )


def _md_start(data, run_name, step):
    """The intact frame of MD run ``run_name`` at ``step`` or, if broken, the last before it."""
    run = data.run_names.index(run_name)
    candidates = np.flatnonzero((data.run == run) & data.intact & (data.step <= step))
    if len(candidates) == 0:
        raise ValueError(f"MD run {run_name!r} has no intact frame at or before step {step}")
    k = candidates[np.argmax(data.step[candidates])]
    return data.frames[k], int(data.step[k])


def ring_relaxation_starts(settings=RING_RELAXATIONS):
    """The start structures of the ring relaxations, in order of priority.

    Returns
    -------
    starts : list of (str, ase.Atoms, str, int)
        ``(name, atoms, source_run, source_step)``: the path's name (its file stem),
        the start structure, and the MD run and step it was taken from
        (``"built"`` and -1 for :func:`gold_thiolate_ring`).
    """
    from ._builders import gold_thiolate_ring
    from ._bundled import load_gold_thiolate_rings

    data = load_gold_thiolate_rings(include_broken=True)
    starts = []
    held_out = settings["held_out_run"]
    for step in settings["held_out_steps"]:
        atoms, used = _md_start(data, held_out, step)
        starts.append((f"{held_out}_step{used:03d}", atoms, held_out, used))
    for n in settings["n_gold"]:
        starts.append((f"built_Au{n}(SCH3){n}", gold_thiolate_ring(n), "built", -1))
    for step in settings["md_steps"]:
        for run_name in data.run_names:
            if run_name == held_out:
                continue
            atoms, used = _md_start(data, run_name, step)
            starts.append((f"{run_name}_step{used:03d}", atoms, run_name, used))
    return starts


def _relax_all(starts, directory, settings, only=None):
    from ._relax import run_relaxation

    os.makedirs(directory, exist_ok=True)
    calculator = _relaxation_calculator(settings)
    paths = []
    for name, atoms, source_run, source_step in starts:
        if only is not None and name not in only:
            continue
        path = os.path.join(directory, f"{name}.extxyz")
        summary = run_relaxation(
            atoms,
            calculator,
            path,
            fmax=settings["fmax_eV_per_A"],
            max_steps=settings["max_steps"],
            maxstep=settings["maxstep_A"],
            source_run=source_run,
            source_step=source_step,
            timeout=settings["timeout_s"],
            max_failures=settings["max_failures"],
            min_maxstep=settings["min_maxstep_A"],
            divergence=settings.get("divergence_eV_per_A"),
        )
        print(
            f"{name}: {summary['status']} after {summary['n_steps']} steps, fmax "
            f"{summary['fmax_reached']:.3f} eV/A, {len(summary['failures'])} failures, "
            f"{summary['wall_time_s']:.0f} s",
            flush=True,
        )
        paths.append(path)
    return paths


def generate_gold_thiolate_ring_relaxations(directory, *, settings=RING_RELAXATIONS, only=None):
    """GFN2-xTB BFGS paths of the rings from :func:`ring_relaxation_starts`, every step kept.

    One extxyz file per path (``<source run>_step<step>.extxyz`` or
    ``built_Au<n>(SCH3)<n>.extxyz``) with a ``.summary.json`` beside it once the
    path has ended; resumable (see :func:`~mlmlearn.datasets._relax.run_relaxation`:
    an interrupted path continues exactly, from its last frame and BFGS's restart
    file). ``only`` (a set of path names) runs only those. Returns the paths run.
    """
    return _relax_all(ring_relaxation_starts(settings), directory, settings, only)


def generate_au25_relaxations(directory, *, settings=AU25_RELAXATIONS, only=None):
    """GFN1-xTB BFGS paths of Au25(SCH3)18- from frames of the bundled MD runs.

    Starts are ``settings["starts"]`` (run name, step) of :func:`load_au25`'s
    archive; otherwise as :func:`generate_gold_thiolate_ring_relaxations`.
    """
    return _relax_all(au25_relaxation_starts(settings), directory, settings, only)


def au25_relaxation_starts(settings=AU25_RELAXATIONS):
    """The start structures of the Au25 relaxations, as :func:`ring_relaxation_starts`."""
    from ._bundled import load_au25

    data = load_au25(runs="all", include_broken=True)
    starts = []
    for run_name, step in settings["starts"]:
        atoms, used = _md_start(data, run_name, step)
        starts.append((f"{run_name}_step{used:03d}", atoms, run_name, used))
    return starts


def compute_isolated_atom_energies(method, *, settings=ISOLATED_ATOMS):
    """Energies (eV) of single neutral atoms with tblite, as stored in the relaxation archives.

    Parameters
    ----------
    method : {"GFN2-xTB", "GFN1-xTB"}
    settings : dict, default=ISOLATED_ATOMS
        ``elements``, their ``multiplicity`` and the ``electronic_temperature`` (K).

    Returns
    -------
    energies : dict of str to float
        Element symbol to energy in eV.
    """
    from .._optional import import_optional

    Atoms = import_optional("ase", purpose="compute_isolated_atom_energies").Atoms
    TBLite = import_optional("tblite.ase", purpose="compute_isolated_atom_energies").TBLite
    energies = {}
    for element in settings["elements"]:
        atoms = Atoms(element, positions=[[0.0, 0.0, 0.0]])
        atoms.calc = TBLite(
            method=method,
            charge=0,
            multiplicity=settings["multiplicity"][element],
            electronic_temperature=settings["electronic_temperature"],
            verbosity=0,
        )
        energies[element] = float(atoms.get_potential_energy())
    return energies


#: Active learning of the ring potential: 600 K Langevin MD on
#: :class:`~mlmlearn.forcefield.EMLMPotential` (its defaults, GFN2-xTB isolated-atom
#: energies), checked by GFN2-xTB single points; frames where the potential's force RMSE
#: exceeds the threshold join the data (see
#: :func:`~mlmlearn.applications.active_learning.active_learning`). Trained on
#: :func:`~mlmlearn.datasets.training_mask` of the MD and relaxation frames with the
#: held-out run left out; MD starts from the frame at ``start_step`` of ``start_runs``.
#: Two phases, each its own loop on the data of the phase before it: ``"md"`` checks MD
#: frames only; ``"relax"`` also relaxes the last structure of every trajectory on the
#: potential (BFGS to ``relax_fmax``) and checks that minimum by its force RMSE. (A third
#: phase that also added every minimum where GFN2-xTB's largest force exceeded 0.1 eV/Å,
#: ``relax_max_force``, did not converge: its Au6–Au8 minima drew 4–9 frames a round, with
#: GFN2-xTB forces up to 11 eV/Å there, GFN2-xTB's collapse of those rings; dropped.)
RING_ACTIVE = {
    "method": "GFN2-xTB",
    "charge": 0,
    "held_out_run": "Au5(SCH3)5_600K",
    "stride": 4,
    "start_runs": (
        "Au4(SCH3)4_600K",
        "Au5(SCH3)5_300K",
        "Au5(SCH3)5_900K",
        "Au6(SCH3)6_600K",
        "Au7(SCH3)7_600K",
        "Au8(SCH3)8_600K",
    ),
    "start_step": 200,
    "temperature_K": 600.0,
    "n_steps": 2000,
    "timestep_fs": 1.0,
    "friction_per_fs": 0.01,
    "check_every": 50,
    "force_threshold_eV_per_A": 0.2,
    "random_state": 0,
    "phases": (
        {"name": "md", "rounds": 12},
        {"name": "relax", "rounds": 8, "relax_fmax_eV_per_A": 0.01, "relax_steps": 500},
    ),
}


def ring_active_learning_setup(settings=RING_ACTIVE):
    """The potential, training frames, starts and reference of :data:`RING_ACTIVE`.

    Returns
    -------
    potential : EMLMPotential
        Unfitted.
    train : list of ase.Atoms
        MD and relaxation frames (:func:`~mlmlearn.datasets.training_mask`,
        every ``stride``-th, the held-out run's frames and its relaxations left out).
    starts : list of (ase.Atoms, str, int)
        Each MD start with its source run and step.
    reference : callable
        Makes the GFN2-xTB calculator.
    """
    import functools

    from ..forcefield import EMLMPotential
    from ._bundled import _concatenate, isolated_atom_energies, load_gold_thiolate_rings
    from ._sampling import training_mask

    # MD and relaxation frames, never the active-learning frames this recipe makes
    data = _concatenate({k: load_gold_thiolate_rings(kind=k) for k in ("md", "relaxation")})
    exclude = data.source_run == settings["held_out_run"]
    keep = training_mask(data, exclude, stride=settings["stride"])
    train = [f for f, k in zip(data.frames, keep, strict=True) if k]
    md = load_gold_thiolate_rings(include_broken=True)
    starts = []
    for run_name in settings["start_runs"]:
        atoms, used = _md_start(md, run_name, settings["start_step"])
        starts.append((atoms, run_name, used))
    potential = EMLMPotential(atomic_energies=isolated_atom_energies(settings["method"]))
    reference = functools.partial(_tblite, settings["method"], settings["charge"])
    return potential, train, starts, reference


def generate_gold_thiolate_ring_active(directory, *, settings=RING_ACTIVE, verbose=0):
    """Run :data:`RING_ACTIVE`'s active learning, one checkpoint folder per phase.

    Phase ``p`` runs in ``directory/<p's name>`` (``added.traj``, ``state.json``) on the
    training frames plus every frame the phases before it added. Resumable: run again
    after an interruption and each phase continues after its last finished round; a
    larger ``rounds`` continues a finished phase. About 2–3 minutes of one core per
    round.

    Returns
    -------
    results : list of ActiveLearningResult
        One per phase.
    """
    from ..applications.active_learning import active_learning

    potential, train, starts, reference = ring_active_learning_setup(settings)
    results, added = [], []
    for phase in settings["phases"]:
        result = active_learning(
            potential,
            train + added,
            reference,
            [atoms for atoms, _, _ in starts],
            rounds=phase["rounds"],
            temperature_K=settings["temperature_K"],
            n_steps=settings["n_steps"],
            timestep=settings["timestep_fs"],
            friction=settings["friction_per_fs"],
            check_every=settings["check_every"],
            force_threshold=settings["force_threshold_eV_per_A"],
            relax_fmax=phase.get("relax_fmax_eV_per_A"),
            relax_steps=phase.get("relax_steps", 500),
            relax_max_force=phase.get("relax_max_force_eV_per_A"),
            checkpoint=os.path.join(directory, phase["name"]),
            random_state=settings["random_state"],
            verbose=verbose,
        )
        results.append(result)
        added = added + result.added
    return results
