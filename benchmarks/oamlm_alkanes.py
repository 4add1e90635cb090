"""Paper III on the bundled alkane data: OAMLM force directions of C and H.

    python benchmarks/oamlm_alkanes.py                       # the paper's settings
    python benchmarks/oamlm_alkanes.py --sweep               # then a GroupKFold sweep

Protocol of paper III (thesis 3.x, [PIII]): runs 1–2 of every alkane C2–C7 train,
run 3 tests (carbon: every frame; hydrogen: every second frame, like the paper, or
sparser with ``--test-step``). SOAP n_max 6, l_max 1, r_cut 3.0 Å, σ 1.0 Å,
min-max scaled; RS-maximin picks the training set and every training point is a
reference; 4 nearest neighbours with all 24 orderings, accuracy (2.25).
Numeric loss σ₁ 0.25, σ₂ 0.5 with the g ≤ d_g reference filter; regular
(least squares) and robust (Huber p 1.0–2.0) training. The paper used 7 500
references per element; ``--n-train`` scales that down to fit a 2-core machine
(the default 2 000). Each row prints the test weighted average angle (degrees,
weights |F|²).
"""

import argparse
import time

from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from mlmlearn import OAMLM, RSMaximin
from mlmlearn.atoms import SOAP, AtomicEnvironments
from mlmlearn.datasets import load_alkanes
from mlmlearn.metrics import angle_scorer, weighted_average_angle

PAPER = {"C": (55.4, 47.2), "H": (42.1, 38.3)}  # regular, best robust (paper III)


def paper_descriptor(**soap):
    settings = dict(n_max=6, l_max=1, r_cut=3.0, sigma=1.0) | soap
    return make_pipeline(SOAP(species=["H", "C"], **settings), MinMaxScaler())


def split(element, test_step):
    data = load_alkanes()
    train = [f for f, s in zip(data.frames, data.split, strict=True) if s == "train"]
    test = [f for f, s in zip(data.frames, data.split, strict=True) if s == "test"]
    step = test_step if test_step else (1 if element == "C" else 2)
    runs = [f.info["run"] for f in train]  # groups: one MD run of one molecule
    return (
        AtomicEnvironments(train, species=element, groups=runs),
        AtomicEnvironments(test[::step], species=element),
    )


def training_subset(train, n_train):
    """Paper III: RS-maximin over the scaled descriptors of every training environment."""
    features = paper_descriptor().fit_transform(train)
    return train[RSMaximin(n_train).fit(features).indices_]


def evaluate(model, train, test):
    t0 = time.perf_counter()
    model.fit(train, train.forces)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = model.predict(test)
    t_predict = time.perf_counter() - t0
    train_angle = weighted_average_angle(train.forces, model.predict(train))
    return weighted_average_angle(test.forces, v), train_angle, t_fit, t_predict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", nargs="+", default=["C", "H"])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--test-step", type=int, default=0, help="0: the paper's (C 1, H 2)")
    parser.add_argument(
        "--losses",
        nargs="*",
        default=["numeric", "analytic", "sphere"],
        help="losses of the paper-settings table (none: only the sweep)",
    )
    parser.add_argument("--epsilons", nargs="*", type=float, default=[1.0, 1.2, 1.4, 1.6, 1.8, 2.0])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--cache", default=None, help="joblib cache directory for alignments")
    args = parser.parse_args(argv)

    print(
        f"{'element':7} {'training':10} {'loss':34} {'test °':>7} {'train °':>7} "
        f"{'fit s':>6} {'pred s':>6}   paper III"
    )
    for element in args.elements:
        train_all, test = split(element, args.test_step)
        train = training_subset(train_all, args.n_train)
        print(
            f"# {element}: {len(train)} training points (all references) from "
            f"{len(train_all)}, {len(test)} test environments"
        )
        base = OAMLM(
            paper_descriptor(),
            references="all",
            sigma1=0.25,
            sigma2=0.5,
            n_jobs=args.n_jobs,
            memory=args.cache,
        )
        configs = [("numeric", "nearest", True, eps) for eps in [None, *args.epsilons]]
        configs += [
            ("numeric", "analytic", False, None),
            ("analytic", "", False, None),
            ("sphere", "", False, None),
        ]
        configs += [("analytic", "", False, eps) for eps in args.epsilons[:1]]
        for loss, start, filt, epsilon in configs:
            if loss not in args.losses:
                continue
            model = base.set_params(
                loss=loss, epsilon=epsilon, numeric_start=start or "nearest", reference_filter=filt
            )
            angle, train_angle, t_fit, t_pred = evaluate(model, train, test)
            label = "regular" if epsilon is None else f"Huber {epsilon:.1f}"
            name = loss + (f" ({start} start{', filter' if filt else ''})" if start else "")
            paper = PAPER[element][0 if epsilon is None else 1]
            note = f"{paper:.1f}" + ("" if epsilon is None else " (best robust)")
            print(
                f"{element:7} {label:10} {name:34} {angle:7.1f} {train_angle:7.1f} "
                f"{t_fit:6.0f} {t_pred:6.0f}   {note if start == 'nearest' else ''}",
                flush=True,
            )
        if args.sweep:
            sweep(element, train, test, args.n_jobs, args.cache)


def sweep(element, train, test, n_jobs, cache):
    """GroupKFold by MD run over SOAP settings and σ₂ (analytic loss), then test.

    With every training point a reference, the alignments of a fold do not depend on
    the descriptor: with ``--cache`` they are computed once per fold for all candidates.
    """
    grid = {
        "descriptor__soap__n_max": [4, 6, 8],
        "descriptor__soap__l_max": [1, 3],
        "descriptor__soap__r_cut": [3.0, 4.0],
        "descriptor__soap__sigma": [0.5, 1.0],
        "sigma2": [0.25, 0.5],
    }
    model = OAMLM(
        paper_descriptor(), references="all", loss="analytic", n_jobs=n_jobs, memory=cache
    )
    search = GridSearchCV(model, grid, scoring=angle_scorer, cv=GroupKFold(3))
    t0 = time.perf_counter()
    search.fit(train, train.forces, groups=train.groups)
    angle = weighted_average_angle(test.forces, search.predict(test))
    print(
        f"# {element} sweep ({len(search.cv_results_['params'])} candidates, "
        f"{time.perf_counter() - t0:.0f} s): best {search.best_params_}, "
        f"CV {-search.best_score_:.1f}°, test {angle:.1f}°",
        flush=True,
    )


if __name__ == "__main__":
    main()
