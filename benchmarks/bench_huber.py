"""HuberMLM's batched Huber training of B vs one HuberRegressor per column, at defaults.

Both sides run at their default settings (epsilon=1.35, alpha=1e-4, max_iter=100,
tol=1e-5), on one BLAS thread, timed in CPU seconds. Two problems:

(a) the thesis regime: D_in and D_out of an MLM with K = 500 RS-maximin references
    from N = 600 samples (Friedman #1 inputs, heavy-tailed noise), K close to N;
(b) a well-conditioned 600 × 20 Gaussian design with 200 target columns.

Printed per problem: our time, the looped HuberRegressor's, the ratio, each side's
objective summed over the columns (sklearn's own ``_huber_loss_and_gradient``), and
whether each converged (ours: no ConvergenceWarning; the loop: the number of columns
that stopped at max_iter), and how many columns our first pass at sigma's lower bound
(penalised LAD by ADMM, certified by a duality gap) solved. Targets (issue 16): (a) >= 10x
at an equal or lower objective, (b) never slower than the loop.

    python benchmarks/bench_huber.py [N K]
"""

import sys
import time
import warnings

import numpy as np
from sklearn.datasets import make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import HuberRegressor
from sklearn.linear_model._huber import _huber_loss_and_gradient
from threadpoolctl import threadpool_limits

from mlmlearn import RSMaximin
from mlmlearn._distances import euclidean_distances
from mlmlearn._huber import _huber_regression


def cpu(fn, *args, **kwargs):
    """CPU seconds of one call, its result and the ConvergenceWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.process_time()
        result = fn(*args, **kwargs)
        elapsed = time.process_time() - t0
    n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return elapsed, result, n_warn


def looped(D, Dout):
    coef = np.empty((D.shape[1], Dout.shape[1]))
    icpt, scale, iters = np.empty(Dout.shape[1]), np.empty(Dout.shape[1]), []
    for k in range(Dout.shape[1]):
        h = HuberRegressor().fit(D, Dout[:, k])
        coef[:, k], icpt[k], scale[k] = h.coef_, h.intercept_, h.scale_
        iters.append(h.n_iter_)
    return coef, icpt, scale, np.array(iters)


def total_loss(D, Dout, coef, icpt, scale, eps=1.35, alpha=1e-4):
    w = np.ones(D.shape[0])
    return sum(_huber_loss_and_gradient(np.r_[coef[:, k], icpt[k], scale[k]], D,
                                        Dout[:, k], eps, alpha, w)[0]
               for k in range(Dout.shape[1]))


def ours(D, Dout, info):
    """huber_regression at its defaults (validated float64 arrays: the same work)."""
    return _huber_regression(D, Dout, 1.35, 1e-4, True, 100, 1e-5, 0, info=info)


def compare(name, D, Dout):
    t_loop, (c1, i1, s1, it), _ = cpu(looped, D, Dout)
    info = {}
    t_ours, (c2, i2, s2, n_it), n_warn = cpu(ours, D, Dout, info)
    L_loop, L_ours = total_loss(D, Dout, c1, i1, s1), total_loss(D, Dout, c2, i2, s2)
    print(f"{name}: design {D.shape[0]}x{D.shape[1]}, {Dout.shape[1]} columns")
    print(f"  ours  {t_ours:8.2f} s  objective {L_ours:14.6g}  iterations {n_it:4d}  "
          f"{'converged' if n_warn == 0 else 'ConvergenceWarning'}  "
          f"{info['collapsed']} of {Dout.shape[1]} columns solved at sigma's lower bound "
          f"({info['admm_iterations']} ADMM iterations)")
    print(f"  loop  {t_loop:8.2f} s  objective {L_loop:14.6g}  "
          f"{int(np.sum(it >= 100))} of {it.size} columns stopped at max_iter=100")
    print(f"  ratio {t_loop / t_ours:6.1f}x   objective ours <= loop: {L_ours <= L_loop}")


def main(n=600, k=500):
    X, y = make_friedman1(n_samples=n, noise=0.0, random_state=0)
    y = y + np.random.default_rng(0).standard_t(2, size=n)
    idx = RSMaximin(k).fit(X).indices_
    D = euclidean_distances(X, X[idx])
    Dout = np.abs(y[:, None] - y[idx][None])
    rng = np.random.default_rng(1)
    Xs = rng.normal(size=(600, 20))
    Ys = Xs @ rng.normal(size=(20, 200)) + rng.standard_t(2, size=(600, 200))
    with threadpool_limits(1):
        compare("(a) thesis regime, distance design", D, Dout)
        compare("(b) well-conditioned Gaussian design", Xs, Ys)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
