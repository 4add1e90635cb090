"""How the bundled reference data were generated, as functions anyone can rerun.

Each recipe writes one extxyz trajectory per MD run into a directory (resumable:
rerunning continues unfinished runs) and returns the list of files. The
settings below are exactly the ones of the shipped data; :func:`pack` turns
the trajectories into the compressed archive the loaders read.

The xTB calculations use tblite (mlmlearn's ``xtb`` extra: ``pip install ".[xtb]"`` in
the source tree).
"""

import os

__all__ = [
    "ALKANES",
    "RINGS",
    "AU25",
    "AU25_FIXED_TEMPERATURE",
    "generate_alkanes",
    "generate_gold_thiolate_rings",
    "generate_au25",
    "generate_au25_fixed_temperature",
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
