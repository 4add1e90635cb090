"""Command-line entry point: ``python -m mlmlearn demo``."""

import argparse
import sys
import time

__all__ = ["main", "demo"]


def _models(random_state):
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from . import EMLM, MLM, HuberMLM

    inner = KFold(3, shuffle=True, random_state=random_state)
    refs = [20, 50, 100, 200]

    def tuned(estimator, grid):
        pipe = make_pipeline(StandardScaler(), estimator)
        step = pipe.steps[-1][0]
        grid = {f"{step}__{k}": v for k, v in grid.items()}
        return GridSearchCV(pipe, grid, cv=inner, scoring="neg_mean_squared_error")

    return {
        "EMLM": tuned(EMLM(), {"references": refs, "beta": [1.49e-8, 1e-2, 1.0]}),
        "MLM": tuned(MLM(), {"references": refs, "beta": [0.0, 1e-2, 1.0]}),
        # K close to the ~235 training samples of an inner fold is an ill-posed Huber
        # problem (slow, and never chosen): the robust model is tuned on fewer references
        "HuberMLM": tuned(HuberMLM(), {"references": [20, 50], "epsilon": [1.0, 1.35, 2.0]}),
        "KernelRidge (RBF)": tuned(KernelRidge(kernel="rbf"),
                                   {"alpha": [1e-2, 1e-1, 1.0], "gamma": [1e-3, 1e-2, 1e-1]}),
        "Ridge": tuned(Ridge(), {"alpha": [0.1, 1.0, 10.0]}),
    }


def demo(random_state=0, out=None, log=True):
    """Nested cross-validation of the distance-based regressors on a real data set.

    scikit-learn's bundled diabetes data (442 patients, 10 clinical variables,
    disease progression after one year). Every model is tuned by an inner 3-fold
    grid search and scored on the outer 5 folds; printed: R² and RMSE (mean ±
    standard deviation over the outer folds) and the time of one outer fit.
    With the atomistic extra installed, :func:`directions_demo` follows. BLAS
    runs on one thread here: on matrices of a few hundred rows its threads
    cost more than they save (measured on 2 busy cores: KernelRidge's grid
    search 0.15 s on one thread, 4–6 s on two).

    Parameters
    ----------
    random_state : int, default=0
        Seed of the outer and inner fold shuffles.
    out : file-like, default=None
        Where the result tables go; standard output when None.
    log : file-like, True or None, default=True
        Where progress goes as the demo runs (a timestamped line per stage and
        model, a tqdm bar over each loop when tqdm is installed): True for
        standard error, None for no progress.

    Returns
    -------
    status : int
        0.
    """
    import warnings

    import numpy as np
    from sklearn.base import clone
    from sklearn.datasets import load_diabetes
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score, root_mean_squared_error
    from sklearn.model_selection import KFold, ParameterGrid
    from threadpoolctl import threadpool_limits

    out = sys.stdout if out is None else out
    log = _stage_log(log)
    X, y = load_diabetes(return_X_y=True)
    outer = KFold(5, shuffle=True, random_state=random_state)
    folds = list(outer.split(X))
    print(f"diabetes: {X.shape[0]} samples, {X.shape[1]} features; nested CV "
          "(inner 3-fold grid search, outer 5-fold)", file=out, flush=True)
    print(f"{'model':<20}{'R2':>16}{'RMSE':>18}{'fit s':>9}  chosen", file=out, flush=True)
    for name, model in _models(random_state).items():
        n_candidates = len(ParameterGrid(model.param_grid))
        log(f"{name}: 5 outer folds, each a 3-fold grid search over {n_candidates} candidates")
        t0 = time.perf_counter()
        r2, rmse, stopped, best = [], [], 0, None
        for train, test in log.loop(folds, desc=name):
            with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, "blas"):
                warnings.simplefilter("always", ConvergenceWarning)
                fitted = clone(model).fit(X[train], y[train])
            stopped += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            predicted = fitted.predict(X[test])
            r2.append(r2_score(y[test], predicted))
            rmse.append(root_mean_squared_error(y[test], predicted))
            best = fitted.best_params_ if best is None else best
        elapsed = (time.perf_counter() - t0) / len(folds)
        log(f"{name}: done, {elapsed * len(folds):.1f} s")
        r2, rmse = np.array(r2), np.array(rmse)
        chosen = ", ".join(f"{k.split('__')[-1]}={v}" for k, v in best.items())
        print(f"{name:<20}{r2.mean():>9.3f} ± {r2.std():.3f}{rmse.mean():>11.1f} ± "
              f"{rmse.std():<5.1f}{elapsed:>8.2f}  {chosen}", file=out, flush=True)
        if stopped:
            print(f"{'':<20}({stopped} of the grid-search fits stopped at max_iter)", file=out,
                  flush=True)
    try:
        import ase  # noqa: F401
        import dscribe  # noqa: F401
        import numba  # noqa: F401
    except ImportError:
        print("\nforce directions: skipped (the OAMLM part needs the atoms extra: "
              'pip install ".[atoms]" in a clone of mlmlearn)', file=out)
        return 0
    return directions_demo(out=out, log=log)


def _stage_log(log):
    from ._progress import StageLog

    if isinstance(log, StageLog):
        return log
    return StageLog(sys.stderr if log is True else log)


def directions_demo(out=None, log=True):
    """OAMLM force directions on the bundled GFN2-xTB alkane data (paper III's protocol).

    Trains on every 20th frame of MD runs 1–2 of ethane … heptane (RS-maximin
    references on min-max-scaled SOAP, paper III's descriptor and 4-neighbour
    permutation alignment, analytic loss) and tests on every 50th frame of the
    unseen run 3. Printed: the force-weighted average angle (degrees) of the
    OAMLM and of the direction to the nearest atom (the numeric loss's start).
    ``out`` and ``log`` as in :func:`demo`.
    """
    import numpy as np
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from .atoms import SOAP, AtomicEnvironments
    from .atoms._neighbors import nearest_neighbors
    from .datasets import load_alkanes
    from .metrics import weighted_average_angle
    from .oamlm import OAMLM

    out = sys.stdout if out is None else out
    log = _stage_log(log)
    log("force directions: loading the bundled alkane data")
    data = load_alkanes()
    train = [f for f, s in zip(data.frames, data.split, strict=True) if s == "train"][::20]
    test = [f for f, s in zip(data.frames, data.split, strict=True) if s == "test"][::50]
    print("\nforce directions, alkanes C2-C7 (GFN2-xTB MD at 750 K): train runs 1-2, test run 3",
          file=out, flush=True)
    print(f"{'element':<9}{'train':>7}{'test':>7}{'OAMLM °':>9}{'nearest atom °':>16}{'fit s':>7}",
          file=out, flush=True)
    for element in ("C", "H"):
        tr = AtomicEnvironments(train, species=element)
        te = AtomicEnvironments(test, species=element)
        descriptor = make_pipeline(
            SOAP(species=["H", "C"], n_max=6, l_max=1, r_cut=3.0, sigma=1.0), MinMaxScaler()
        )
        log(f"{element}: OAMLM fit on {len(tr)} environments (SOAP, 400 RS-maximin references, "
            "alignments of every environment with every reference)")
        t0 = time.perf_counter()
        # the OAMLM's own bar goes to standard error: shown when the log goes there
        bar = int(log.bars and log.file is sys.stderr)
        model = OAMLM(descriptor, references=400, sigma2=0.5, n_jobs=2, verbose=bar)
        model.fit(tr, tr.forces)
        elapsed = time.perf_counter() - t0
        log(f"{element}: fitted in {elapsed:.1f} s; predicting {len(te)} test environments")
        angle = weighted_average_angle(te.forces, model.predict(te))
        nearest = nearest_neighbors(te, 1, np.inf)[:, 0]
        baseline = weighted_average_angle(te.forces, nearest)
        print(f"{element:<9}{len(tr):>7}{len(te):>7}{angle:>9.1f}{baseline:>16.1f}{elapsed:>7.1f}",
              file=out, flush=True)
    print("(random directions average 90°; the paper III bar on its DFTB data: C 55.4°, H 42.1°)",
          file=out)
    return 0


DESCRIPTION = """\
mlmlearn: Minimal Learning Machines (EMLM, MLM, HuberMLM, OAMLM) for atomistic
simulation, as scikit-learn estimators.

The demo runs nested cross-validation of EMLM, MLM and HuberMLM against
KernelRidge and Ridge on scikit-learn's diabetes data, then (with the atoms
extra installed) predicts alkane force directions with the OAMLM on the bundled
GFN2-xTB data: about a minute on 2 cores. Results go to standard output,
progress (a timestamped line per stage, a bar per loop) to standard error.
"""


def _parser():
    parser = argparse.ArgumentParser(
        prog="mlmlearn",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    p_demo = sub.add_parser(
        "demo",
        help="fit EMLM, MLM and HuberMLM on a real data set, compare them with "
        "KernelRidge and Ridge, then predict alkane force directions with the OAMLM",
        description="Nested cross-validation of the distance-based regressors on "
        "scikit-learn's diabetes data, then OAMLM force directions of alkane atoms.",
    )
    p_demo.add_argument(
        "--random-state", type=int, default=0, help="seed of the fold shuffles (default 0)"
    )
    p_demo.add_argument(
        "--quiet", action="store_true", help="no progress on standard error, results only"
    )
    return parser


def main(argv=None):
    """Run the command line ``mlmlearn demo [--random-state N] [--quiet]``; returns the status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return demo(random_state=args.random_state, log=None if args.quiet else True)
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
