"""Command-line entry point: ``mlmlearn demo``, ``mlmlearn train``, ``mlmlearn optimize``."""

import argparse
import sys

__all__ = ["main"]


def _stage_log(log):
    from ._progress import StageLog

    if isinstance(log, StageLog):
        return log
    return StageLog(sys.stderr if log is True else log)


DESCRIPTION = """\
mlmlearn: Minimal Learning Machines (EMLM, MLM, HuberMLM, OAMLM) for atomistic
simulation, as scikit-learn estimators.

commands:
  demo      train the conservative potential and paper IV's force field on the
            bundled GFN2-xTB ring data with one ring size held out, optimize that
            ring with each on ASE's BFGS and check both with GFN2-xTB single points
            (a few minutes)
  train     fit a force field (per atom type: EMLM force norms, OAMLM force
            directions) on extended-XYZ files with forces, and save it
  optimize  optimize a structure file with a saved force field on ASE's BFGS

Results go to standard output, progress to standard error. "mlmlearn COMMAND
--help" describes each command.
"""


def _parser():
    from ._demo import DEFAULT_OUTPUT

    parser = argparse.ArgumentParser(
        prog="mlmlearn", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    demo = sub.add_parser(
        "demo", help="potential and force field side by side: ML-BFGS and GFN2-xTB checks",
        description="Train the conservative potential (EMLMPotential) and paper IV's force "
        "field on the bundled gold-thiolate ring data (MD and reference relaxations) with one "
        "ring size held out, test both on that ring, optimize the ring's last 600 K frame with "
        "each on ASE's BFGS, and compute GFN2-xTB single points along both and a GFN2-xTB BFGS "
        "from the same start. Needs the atoms and xtb extras (plot for figures).")
    demo.add_argument("--held-out", type=int, default=5, choices=range(4, 9), metavar="N",
                      help="gold atoms of the held-out ring, 4 to 8 (default 5)")
    demo.add_argument("--output", default=DEFAULT_OUTPUT,
                      help=f"folder for the trajectory and figures (default {DEFAULT_OUTPUT})")
    demo.add_argument("--quiet", action="store_true", help="no progress, results only")

    train = sub.add_parser(
        "train", help="fit a force field on extended-XYZ files and save it",
        description="Fit a ForceField (per atom type: SOAP, MinMaxScaler and EMLM for force "
        "norms; OAMLM with the gold-thiolate alignment rules for directions) on every frame "
        "of the given files (forces in eV/Å as written by ASE) and save it with joblib.")
    train.add_argument("files", nargs="+", help="extended-XYZ (or any ASE-readable) files")
    train.add_argument("--output", "-o", required=True, help="where to save the model (.joblib)")
    train.add_argument("--references", type=int, default=2500,
                       help="references per atom type and model (default 2500, paper IV)")
    train.add_argument("--stride", type=int, default=1, help="use every Nth frame (default 1)")
    train.add_argument("--typing", choices=("gold_thiolate", "element"), default="gold_thiolate",
                       help="atom types with a model of their own (default gold_thiolate)")
    train.add_argument("--quiet", action="store_true", help="no progress")

    opt = sub.add_parser(
        "optimize", help="optimize a structure with a saved force field",
        description="Optimize the structure in a file with a saved force field's forces on "
        "ASE's BFGS; the trajectory is written as extended XYZ and can be resumed.")
    opt.add_argument("model", help="a force field saved by 'mlmlearn train'")
    opt.add_argument("structure", help="an ASE-readable structure file (its last frame is used)")
    opt.add_argument("--trajectory", "-o", required=True, help="extended-XYZ trajectory to write")
    opt.add_argument("--fmax", type=float, default=0.1, help="eV/Å (default 0.1)")
    opt.add_argument("--steps", type=int, default=200, help="step limit (default 200)")
    opt.add_argument("--maxstep", type=float, default=0.1, help="Å (default 0.1)")
    opt.add_argument("--schedule", default=None,
                     help="part-wise rounds, e.g. shell:24,core:12 (paper IV: the ligand shell - "
                     "unit gold, S, C, H - for 24 steps with the core fixed, then the core gold "
                     "for 12); default all atoms")
    opt.add_argument("--hessian-reset", default=None,
                     help="reset the Hessian every N steps, or 'round'")
    opt.add_argument("--max-uncertainty", type=float, default=None,
                     help="stop a part when an atom's predicted uncertainty (Å, the OAMLM's "
                     "expected alignment misfit) exceeds this")
    opt.add_argument("--resume", action="store_true", help="continue an interrupted run")
    opt.add_argument("--quiet", action="store_true", help="no progress")
    return parser


def _train(args):
    import warnings

    import joblib
    from ase.io import read

    from .atoms import AtomicEnvironments
    from .forcefield import ForceField, default_direction_model, default_norm_model
    from .metrics import force_table

    log = _stage_log(None if args.quiet else True)
    frames, groups = [], []
    for i, path in enumerate(args.files):
        read_frames = read(path, f"::{args.stride}")
        frames += read_frames
        groups += [i] * len(read_frames)
        log(f"{path}: {len(read_frames)} frames")
    env = AtomicEnvironments(frames, groups=groups)
    ff = ForceField(default_norm_model(args.references),
                    default_direction_model(args.references), typing=args.typing,
                    verbose=0 if args.quiet else 1)
    log(f"fitting on {len(env)} environments of {len(frames)} frames")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ff.fit(env)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    joblib.dump(ff, args.output)
    table = force_table(env.forces, ff.predict(env), ff.atom_types(env))
    print(f"force field saved to {args.output}; types {ff.types_}")
    print("training-set accuracy (not a test: hold out files to test):")
    print(table)
    return 0


def _optimize(args):
    import joblib
    from ase.io import read

    from .applications.optimize import optimize
    from .forcefield import MLMCalculator

    schedule = None
    if args.schedule:
        schedule = []
        for item in args.schedule.split(","):
            part, _, n = item.partition(":")
            schedule.append((part.strip(), int(n)))
    reset = args.hessian_reset
    if reset is not None and reset != "round":
        reset = int(reset)
    ff = joblib.load(args.model)
    atoms = read(args.structure, -1)
    atoms.calc = None
    result = optimize(atoms, MLMCalculator(ff), fmax=args.fmax, steps=args.steps,
                      maxstep=args.maxstep, schedule=schedule, hessian_reset=reset,
                      max_uncertainty=args.max_uncertainty,
                      trajectory=args.trajectory, resume=args.resume,
                      verbose=0 if args.quiet else 1)
    print(f"{result.stop_reason}: {result.n_steps} steps, final fmax {result.fmax[-1]:.3f} eV/Å; "
          f"trajectory {result.trajectory}")
    return 0 if result.converged else 1


def main(argv=None):
    """Run ``mlmlearn demo|train|optimize ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import ring_demo

        ring_demo(args.held_out, output=args.output, log=None if args.quiet else True)
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "optimize":
        return _optimize(args)
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
