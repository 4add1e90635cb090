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
    "generate_alkanes",
    "generate_gold_thiolate_rings",
    "generate_au25",
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


def generate_au25(start, directory, *, settings=AU25, verbose=0):
    """Heat Au25(SCH3)18⁻ from ``start`` (an ASE-readable file) with GFN1-xTB Langevin MD.

    GFN2-xTB does not converge on the 13-atom gold core; GFN1-xTB does. The
    anion is used because it is the closed-shell, experimentally stable charge
    state (the neutral cluster has an odd electron count).
    """
    from .._optional import import_optional
    from ._md import run_md

    read = import_optional("ase.io", purpose="generate_au25").read

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "Au25(SCH3)18_heating.extxyz")
    run_md(
        read(start),
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
