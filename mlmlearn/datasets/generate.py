"""Regenerate a bundled data set: ``python -m mlmlearn.datasets.generate NAME``.

Runs the recipe of :mod:`mlmlearn.datasets._recipes` into a work directory
(resumable: run the same command again after an interruption) and packs the
trajectories into an archive the loaders read::

    python -m mlmlearn.datasets.generate alkanes --workdir md/alkanes --output alkanes.npz
    python -m mlmlearn.datasets.generate rings --workdir md/rings --output gold_thiolate_rings.npz
    python -m mlmlearn.datasets.generate au25 --start au25_sch3_18.xyz \\
        --workdir md/au25 --output au25.npz
    python -m mlmlearn.datasets.generate ring-relaxations --workdir relax/rings \\
        --output gold_thiolate_ring_relaxations.npz
    python -m mlmlearn.datasets.generate au25-relaxations --workdir relax/au25 \\
        --output au25_relaxations.npz
    python -m mlmlearn.datasets.generate ring-active --workdir active/rings \\
        --output gold_thiolate_ring_active.npz

The relaxation recipes (:data:`~mlmlearn.datasets._recipes.RING_RELAXATIONS`,
:data:`~mlmlearn.datasets._recipes.AU25_RELAXATIONS`) start from frames of the
bundled MD archives, write one extxyz file per BFGS path and pack the finished
paths with the isolated-atom energies of their method; ``--pack-only`` packs
what the work directory holds (metadata ``partial`` names the paths missing).

``ring-active`` runs the active learning of
:data:`~mlmlearn.datasets._recipes.RING_ACTIVE` (its checkpoint folder is the work
directory) and packs the frames it added, one run each, with its per-round history.

``au25`` runs the heating run (:data:`~mlmlearn.datasets._recipes.AU25`) and the
independent fixed-temperature runs
(:data:`~mlmlearn.datasets._recipes.AU25_FIXED_TEMPERATURE`) into one archive (about
1.9 h and 2 x 45 min of one core); ``--temperatures`` runs only some of the
fixed-temperature runs (to share them over cores) and packs what the work
directory then holds.

Set ``OMP_NUM_THREADS=1``: xTB on these system sizes is not faster with more threads.
"""

import argparse
import time

import numpy as np

from . import _recipes
from ._bundled import pack

DESCRIPTIONS = {
    "alkanes": (
        "Linear alkanes C2H6-C7H16, GFN2-xTB (tblite) energies and forces. Paper III protocol: "
        "three independent 1000-step velocity-Verlet (NVE) runs per molecule, 1.5 fs steps, "
        "Maxwell-Boltzmann start at 750 K (seed 1000*n_carbons + run), every step kept. "
        "Runs 1-2 are training data, run 3 test data."
    ),
    "rings": (
        "Gold-thiolate rings Au_n(SCH3)_n, n = 4..8, built as in paper IV (regular polygon, S "
        "displaced 1.0 A alternately up and down, methyls on S), GFN2-xTB (tblite) Langevin MD "
        "at 300, 600 and 900 K (friction 0.01/fs, 1.5 fs, 400 steps, every 2nd step kept, seed "
        "10000*n + T)."
    ),
    "au25": (
        "Au25(SCH3)18 anion (charge -1, closed shell), GFN1-xTB (tblite; GFN2-xTB does not "
        "converge on the Au13 core), three independent Langevin MD runs (friction 0.01/fs, "
        "1.5 fs steps, every 2nd step kept) started from the optimized structure "
        "au25_sch3_18.xyz (not shipped): 'Au25(SCH3)18_heating', heated linearly from 300 K "
        "to 1500 K over 1200 steps (seed 25, split 'train'); 'Au25(SCH3)18_300K' and "
        "'Au25(SCH3)18_500K', held at 300 K and 500 K for 700 steps (seeds 25300 and 25500, "
        "split 'test'), runs a model trained on the others never saw."
    ),
    "ring-relaxations": (
        "Gold-thiolate rings Au_n(SCH3)_n, n = 4..8, GFN2-xTB (tblite) reference relaxations: "
        "ASE BFGS (maxstep 0.1 A) to fmax 0.02 eV/A, at most 300 steps, every step kept. "
        "Starts: every 20th frame of the MD run Au5(SCH3)5_600K (steps 0, 40, ..., 400; the "
        "held-out test run, split 'test'), the built rings (source_run 'built'), and the "
        "frames at steps 400 and 200 (the last intact one at or before) of every other MD run "
        "of gold_thiolate_rings.npz (split 'train'). Paths GFN2-xTB "
        "pulls into a collapse of the gold atoms (Au6-Au8) are 'diverged' and kept up to "
        "their frame of smallest largest force. Isolated-atom energies in the metadata."
    ),
    "au25-relaxations": (
        "Au25(SCH3)18 anion (charge -1), GFN1-xTB (tblite) reference relaxations: ASE BFGS "
        "(maxstep 0.1 A) to fmax 0.05 eV/A, at most 300 steps, every step kept, from frames "
        "of the heating run and of the 500 K run of au25.npz (never of the 300 K test run). "
        "Isolated-atom energies in the metadata."
    ),
    "ring-active": (
        "Gold-thiolate rings Au_n(SCH3)_n, GFN2-xTB (tblite) frames found by active learning: "
        "600 K Langevin MD (1 fs, friction 0.01/fs, 2000 steps per round) on an EMLMPotential "
        "(defaults, GFN2-xTB isolated-atom energies) trained on every 4th MD frame and "
        "relaxation step of gold_thiolate_rings.npz and gold_thiolate_ring_relaxations.npz "
        "(the ends of converged paths included, the run Au5(SCH3)5_600K and its relaxations "
        "left out), from the frame at step 200 of six training runs; a GFN2-xTB single point "
        "every 50 steps, and a frame where the potential's force RMSE exceeds 0.2 eV/A joins "
        "the data and ends that trajectory; refitted every round. Each frame is one run, "
        "its source the MD start; the per-round history is in the metadata."
    ),
}

#: The recipe of each relaxation data set and its method's relaxation generator.
RELAXATIONS = {
    "ring-relaxations": ("RING_RELAXATIONS", "generate_gold_thiolate_ring_relaxations"),
    "au25-relaxations": ("AU25_RELAXATIONS", "generate_au25_relaxations"),
}


def pack_active(workdir, output, *, elapsed):
    """Pack the frames the active-learning phases in ``workdir`` added into ``output``.

    Each phase of :data:`~mlmlearn.datasets._recipes.RING_ACTIVE` has its checkpoint
    folder ``workdir/<phase>`` (``added.traj``, ``state.json``); phases not started are
    skipped. Each frame is one run, named ``<phase>_round<r>_<source run>_step<step>``
    (``_relaxed`` appended for a minimum of the potential), with ``kind`` ``"active"``,
    ``phase``, ``source_run`` and ``source_step`` (its MD start), ``round``, ``step``
    (MD steps from the start), ``relaxed``, ``force_rmse_before`` (the potential's
    error on it when found, eV/Å), ``split`` ``"train"`` and ``status`` ``"active"``.
    The metadata also holds ``history`` (per phase and round: reference checks, frames
    added, failed references, the median and largest force RMSE at the MD checks and at
    the relaxed minima, MD steps run per start) and per phase whether it ``converged``.

    Raises
    ------
    FileNotFoundError
        If no phase in ``workdir`` has a finished round or added a frame.
    """
    import json
    import os

    from .._optional import import_optional

    read = import_optional("ase.io", purpose="generate ring-active").read
    settings = _recipes.RING_ACTIVE
    starts = [(run, settings["start_step"]) for run in settings["start_runs"]]
    temperature = settings["temperature_K"]
    runs, packed, history, converged = [], [], [], {}
    for phase in settings["phases"]:
        folder = os.path.join(workdir, phase["name"])
        state_path = os.path.join(folder, "state.json")
        if not os.path.exists(state_path):
            continue
        with open(state_path) as fh:
            state = json.load(fh)
        path = os.path.join(folder, "added.traj")
        frames = read(path, ":") if os.path.exists(path) and os.path.getsize(path) else []
        for frame in frames:
            source_run, source_step = starts[frame.info["start"]]
            step = int(frame.info["step"])
            relaxed = bool(frame.info.get("relaxed", False))
            frame.info.update(step=step, temperature_K=0.0 if relaxed else temperature)
            runs.append({
                "name": f"{phase['name']}_round{frame.info['round']:02d}_{source_run}_step"
                        f"{step:04d}" + ("_relaxed" if relaxed else ""),
                "kind": "active",
                "phase": phase["name"],
                "source_run": source_run,
                "source_step": source_step,
                "round": int(frame.info["round"]),
                "relaxed": relaxed,
                "force_rmse_before": round(float(frame.info["force_rmse"]), 5),
                "split": "train",
                "status": "active",
            })
            packed.append([frame])
        for h in state["history"]:
            entry = {
                "phase": phase["name"],
                "round": h["round"],
                "checked": h["checked"],
                "added": h["added"],
                "failed": h["failed"],
                "force_rmse_median": round(float(np.median(h["force_rmse"])), 5),
                "force_rmse_max": round(float(np.max(h["force_rmse"])), 5),
                "steps": h["steps"],
            }
            if "relax_force_rmse" in h:
                relax = h["relax_force_rmse"] or [float("nan")]
                entry.update(relax_added=h["relax_added"],
                             relax_force_rmse_median=round(float(np.median(relax)), 5),
                             relax_force_rmse_max=round(float(np.max(relax)), 5))
                if h.get("relax_reference_fmax"):
                    entry["relax_reference_fmax"] = [round(f, 4)
                                                     for f in h["relax_reference_fmax"]]
            history.append(entry)
        last = state["history"][-1] if state["history"] else None
        converged[phase["name"]] = bool(last) and last["added"] == 0 and not last["failed"]
    if not packed:
        raise FileNotFoundError(f"no active-learning phase in {workdir!r} added a frame")
    meta = metadata("ring-active", settings, [], elapsed=elapsed)
    meta["runs"] = runs
    meta["history"] = history
    meta["converged"] = converged
    pack(packed, output, metadata=meta)
    return [run["name"] for run in runs]


def _runs(name, paths, settings):
    import os

    runs = []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        run = {"name": stem}
        if name == "alkanes":
            number = int(stem.rsplit("_run", 1)[1])
            run["split"] = "test" if number in settings["test_runs"] else "train"
        elif name == "au25":
            run.update(_au25_run(stem, settings))
        runs.append(run)
    return runs


def _au25_run(stem, settings):
    """Recipe, target temperature (K), seed and split of the Au25 run named ``stem``."""
    if stem.endswith("_heating"):
        heating = settings["heating"]
        return {
            "recipe": "heating",
            "temperature_K": list(heating["temperature_K"]),
            "seed": heating["seed"],
            "split": "train",
        }
    fixed = settings["fixed_temperature"]
    temperature = float(stem.rsplit("_", 1)[1].removesuffix("K"))
    seed = dict(zip(map(float, fixed["temperatures_K"]), fixed["seeds"], strict=True))
    return {
        "recipe": "fixed_temperature",
        "temperature_K": temperature,
        "seed": seed[temperature],
        "split": "test",
    }


def metadata(name, settings, paths, *, elapsed):
    """The ``metadata`` block :func:`pack` stores for data set ``name``.

    Holds the description, the recipe ``settings``, one entry per run (its
    name, and for ``au25`` its recipe, target temperature, seed and split),
    units, the versions of mlmlearn, tblite, ase and numpy, and the wall time
    in seconds of this invocation (``elapsed``).
    """
    from importlib.metadata import version

    from .. import __version__

    return {
        "name": name,
        "description": DESCRIPTIONS[name],
        "settings": settings,
        "runs": _runs(name, paths, settings),
        "units": {
            "positions": "Angstrom",
            "energy": "eV",
            "forces": "eV/Angstrom",
            "temperature": "K",
            "time": "fs",
        },
        "versions": {
            "mlmlearn": __version__,
            **{p: version(p) for p in ("tblite", "ase", "numpy")},
        },
        "wall_time_s_last_invocation": round(elapsed, 1),
    }


#: What ``--help`` shows: the module docstring's content as plain text (a terminal
#: shows reStructuredText markup raw), as :data:`mlmlearn.__main__.DESCRIPTION` does.
DESCRIPTION = """\
Regenerate a bundled data set of mlmlearn: run its xTB molecular dynamics (or
relaxation) recipe into a work directory, then pack the trajectories into an
archive the loaders read (mlmlearn.datasets.load_alkanes, load_gold_thiolate_rings,
load_au25).

Resumable: the extxyz trajectories in --workdir are the checkpoints; run the same
command again after an interruption to continue from the last complete frame.
Needs mlmlearn's atoms and xtb extras (in the source tree: pip install ".[atoms,xtb]").
Set OMP_NUM_THREADS=1: xTB on these system sizes is not faster with more threads.

examples:
  python -m mlmlearn.datasets.generate alkanes --workdir md/alkanes --output alkanes.npz
  python -m mlmlearn.datasets.generate rings --workdir md/rings \\
      --output gold_thiolate_rings.npz
  python -m mlmlearn.datasets.generate au25 --start au25_sch3_18.xyz \\
      --workdir md/au25 --output au25.npz

au25 runs the heating run (300 K -> 1500 K, 1200 steps) and the independent
fixed-temperature runs (300 K and 500 K, 700 steps each) into one archive: about
1.9 h and 2 x 45 min of one core. To share them over two cores, start one
fixed-temperature run alone in a second process (it writes to the same --workdir,
where the first process finds it finished; the last invocation packs all three):
  python -m mlmlearn.datasets.generate au25 --start au25_sch3_18.xyz \\
      --workdir md/au25 --output au25_500K.npz --temperatures 500

Active learning of the ring potential (600 K MD on it, checked by GFN2-xTB; the
work directory is its checkpoint; --pack-only packs the rounds finished so far):
  python -m mlmlearn.datasets.generate ring-active --workdir active/rings \\
      --output gold_thiolate_ring_active.npz

Reference relaxations (BFGS paths, every step kept) from frames of the bundled MD
data; each path runs in a child process, and a failed single point (SCF not
converged, or no result within the recipe's timeout) is retried from the last
good frame with a shorter step. --pack-only packs the finished paths of --workdir
(metadata "partial" lists the others):
  python -m mlmlearn.datasets.generate ring-relaxations --workdir relax/rings \\
      --output gold_thiolate_ring_relaxations.npz
  python -m mlmlearn.datasets.generate au25-relaxations --workdir relax/au25 \\
      --output au25_relaxations.npz
"""


def _relaxation_starts(name, settings):
    """``(path name, source run, source step)`` of each start of relaxation set ``name``."""
    starts = (
        _recipes.ring_relaxation_starts(settings)
        if name == "ring-relaxations"
        else _recipes.au25_relaxation_starts(settings)
    )
    return [(path_name, run, step) for path_name, _, run, step in starts]


def pack_relaxations(name, workdir, output, *, elapsed):
    """Pack the finished relaxation paths of ``workdir`` into the archive ``output``.

    A path is finished when its ``.summary.json`` exists. A ``"diverged"``
    path is packed up to its frame of smallest largest force (what follows
    heads into the method's artifact; the work directory keeps it). Each run
    of the metadata is a path: its name, ``kind`` (``"relaxation"``),
    ``source_run``, ``source_step``, ``split`` (``"test"`` for starts from the
    held-out ring run), ``status``, ``converged``, ``fmax_reached`` (eV/Å, its
    last packed frame), ``n_steps`` (of that frame), ``n_steps_computed``,
    ``failures`` (failed single points and the shorter step after each),
    ``final_maxstep_A`` and ``wall_time_s``. The metadata also holds the
    isolated-atom energies of the method (recomputed here, milliseconds) and
    ``partial``: the paths of the recipe not yet finished, and
    ``wall_time_s_paths``: the packed paths' generation time, summed.

    Returns
    -------
    paths : list of str
        The packed paths' names.

    Raises
    ------
    FileNotFoundError
        If ``workdir`` holds no finished path of the recipe.
    """
    import json
    import os

    from ._md import read_frames

    recipe_name, _ = RELAXATIONS[name]
    settings = getattr(_recipes, recipe_name)
    held_out = settings.get("held_out_run")
    runs, packed, missing = [], [], []
    for path_name, source_run, source_step in _relaxation_starts(name, settings):
        path = os.path.join(workdir, f"{path_name}.extxyz")
        if not os.path.exists(path + ".summary.json"):
            missing.append(path_name)
            continue
        with open(path + ".summary.json") as fd:
            summary = json.load(fd)
        frames = read_frames(path)
        fmax = [float(np.linalg.norm(f.get_forces(), axis=1).max()) for f in frames]
        n_computed = int(frames[-1].info["step"])
        if summary["status"] == "diverged":
            frames = frames[: int(np.argmin(fmax)) + 1]
        runs.append({
            "name": path_name,
            "kind": "relaxation",
            "source_run": source_run,
            "source_step": source_step,
            "split": "test" if source_run == held_out else "train",
            "status": summary["status"],
            "converged": summary["converged"],
            "fmax_reached": round(fmax[len(frames) - 1], 5),
            "n_steps": int(frames[-1].info["step"]),
            "n_steps_computed": n_computed,
            "failures": summary["failures"],
            "final_maxstep_A": summary["final_maxstep"],
            "wall_time_s": summary["wall_time_s"],
        })
        packed.append(frames)
    if not packed:
        raise FileNotFoundError(f"no finished relaxation path of {name} in {workdir!r}")
    meta = metadata(name, settings, [], elapsed=elapsed)
    meta["runs"] = runs
    meta["partial"] = missing
    meta["wall_time_s_paths"] = round(sum(run["wall_time_s"] for run in runs), 1)
    meta["isolated_atom_energies"] = {
        "method": settings["method"],
        "energies_eV": _recipes.compute_isolated_atom_energies(settings["method"]),
        "settings": _recipes.ISOLATED_ATOMS,
    }
    pack(packed, output, metadata=meta)
    return [run["name"] for run in runs]


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m mlmlearn.datasets.generate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name",
        choices=sorted(DESCRIPTIONS),
        help="alkanes: C2H6-C7H16, GFN2-xTB; rings: Au_n(SCH3)_n, n = 4-8, GFN2-xTB; "
        "au25: Au25(SCH3)18 anion, GFN1-xTB, a heating run and fixed-temperature runs "
        "(needs --start); ring-relaxations, au25-relaxations: BFGS paths from frames of "
        "the bundled MD data; ring-active: frames found by active learning of the ring "
        "potential",
    )
    parser.add_argument("--workdir", required=True, help="directory of the extxyz trajectories")
    parser.add_argument("--output", required=True, help="archive to write (.npz)")
    parser.add_argument("--start", help="start structure, any file ASE reads (au25 only)")
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        metavar="K",
        help="au25 only: run only these fixed-temperature runs (of 300 and 500 K) and no "
        "heating run; the archive packs the runs the work directory then holds",
    )
    parser.add_argument(
        "--pack-only",
        action="store_true",
        help="relaxations and ring-active only: run nothing, pack what --workdir holds",
    )
    parser.add_argument(
        "--verbose", type=int, default=1, help="0: quiet; 1 (default): a progress bar per MD run"
    )
    return parser


def main(argv=None):
    """Run ``python -m mlmlearn.datasets.generate NAME --workdir DIR --output FILE``."""
    from .._optional import import_optional

    parser = _parser()
    args = parser.parse_args(argv)
    if args.name == "au25" and args.start is None:
        parser.error("au25 needs --start (the Au25(SCH3)18 start structure)")
    if args.temperatures is not None and args.name != "au25":
        parser.error(f"--temperatures is for au25 only, not {args.name}")
    if args.pack_only and args.name not in (*RELAXATIONS, "ring-active"):
        parser.error(
            f"--pack-only is for the relaxation sets and ring-active only, not {args.name}"
        )
    # both extras are needed; say so before any run starts, not one at a time
    for package in ("ase", "tblite.ase"):
        import_optional(package, purpose="python -m mlmlearn.datasets.generate")

    tic = time.perf_counter()
    if args.name == "ring-active":
        if not args.pack_only:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                _recipes.generate_gold_thiolate_ring_active(args.workdir, verbose=args.verbose)
        names = pack_active(args.workdir, args.output, elapsed=time.perf_counter() - tic)
        print(f"wrote {args.output} ({len(names)} frames)")
        return
    if args.name in RELAXATIONS:
        if not args.pack_only:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):  # xTB on these sizes is not faster with more threads
                getattr(_recipes, RELAXATIONS[args.name][1])(args.workdir)
        names = pack_relaxations(
            args.name, args.workdir, args.output, elapsed=time.perf_counter() - tic
        )
        print(f"wrote {args.output} ({len(names)} paths)")
        return
    if args.name == "alkanes":
        settings = _recipes.ALKANES
        paths = _recipes.generate_alkanes(args.workdir, verbose=args.verbose)
    elif args.name == "rings":
        settings = _recipes.RINGS
        paths = _recipes.generate_gold_thiolate_rings(args.workdir, verbose=args.verbose)
    else:
        settings = {"heating": _recipes.AU25, "fixed_temperature": _recipes.AU25_FIXED_TEMPERATURE}
        paths = _au25(args, parser)
    elapsed = time.perf_counter() - tic

    pack(paths, args.output, metadata=metadata(args.name, settings, paths, elapsed=elapsed))
    print(f"wrote {args.output} ({len(paths)} runs, {elapsed:.0f} s in this invocation)")


def _au25(args, parser):
    """Run the Au25 recipes ``args`` asks for; the trajectories the work directory then holds."""
    import os

    fixed = _recipes.AU25_FIXED_TEMPERATURE
    if args.temperatures is not None:
        unknown = sorted(set(args.temperatures) - set(map(float, fixed["temperatures_K"])))
        if unknown:
            parser.error(
                f"--temperatures {unknown} not among the recipe's {list(fixed['temperatures_K'])}"
            )
        _recipes.generate_au25_fixed_temperature(
            args.start, args.workdir, temperatures=args.temperatures, verbose=args.verbose
        )
        names = ["heating"] + [f"{t:.0f}K" for t in fixed["temperatures_K"]]
        paths = [os.path.join(args.workdir, f"Au25(SCH3)18_{n}.extxyz") for n in names]
        return [path for path in paths if os.path.exists(path)]
    return _recipes.generate_au25(
        args.start, args.workdir, verbose=args.verbose
    ) + _recipes.generate_au25_fixed_temperature(args.start, args.workdir, verbose=args.verbose)


if __name__ == "__main__":
    main()
