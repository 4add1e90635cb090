"""HuberMLM's batched Huber training of B vs one HuberRegressor per column.

D_in and D_out of an MLM with K = 500 RS-maximin references from N = 600 samples
(Friedman #1 inputs, heavy-tailed noise). The looped peer uses HuberRegressor's
defaults (max_iter=100, tol=1e-5), as robust MLM training does; on this nearly
square, ill-conditioned design it stops at max_iter for most columns. Printed:
times, the mean Huber objective each reaches (sklearn's own loss function), and
the ratio. Then the same on a small well-conditioned problem where both converge,
with the largest coefficient difference. Target: >= 20x, same coefficients.
"""

import sys
import warnings

import numpy as np
from _common import timed
from sklearn.datasets import make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import HuberRegressor
from sklearn.linear_model._huber import _huber_loss_and_gradient

from mlmlearn import RSMaximin
from mlmlearn._distances import euclidean_distances
from mlmlearn._huber import huber_regression


def looped(D, Dout, **kw):
    coef = np.empty((D.shape[1], Dout.shape[1]))
    icpt, scale, iters = np.empty(Dout.shape[1]), np.empty(Dout.shape[1]), []
    for k in range(Dout.shape[1]):
        h = HuberRegressor(**kw).fit(D, Dout[:, k])
        coef[:, k], icpt[k], scale[k] = h.coef_, h.intercept_, h.scale_
        iters.append(h.n_iter_)
    return coef, icpt, scale, iters


def mean_loss(D, Dout, coef, icpt, scale, eps=1.35, alpha=1e-4):
    w = np.ones(D.shape[0])
    return np.mean([_huber_loss_and_gradient(np.r_[coef[:, k], icpt[k], scale[k]], D,
                                             Dout[:, k], eps, alpha, w)[0]
                    for k in range(Dout.shape[1])])


def main(n=600, k=500):
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = make_friedman1(n_samples=n, noise=0.0, random_state=0)
    y = y + np.random.default_rng(0).standard_t(2, size=n)
    idx = RSMaximin(k).fit(X).indices_
    D = euclidean_distances(X, X[idx])
    Dout = np.abs(y[:, None] - y[idx][None])
    t_loop, (c1, i1, s1, it) = timed(looped, D, Dout)
    L_loop = mean_loss(D, Dout, c1, i1, s1)
    print(f"N={n} K={k}: looped HuberRegressor {t_loop:.1f} s, mean loss {L_loop:.3f}, "
          f"{np.mean(np.array(it) >= 100):.0%} of columns stopped at max_iter=100")
    for max_iter in (5, 10, 20, 100):
        t_ours, (c2, i2, s2, n_it) = timed(huber_regression, D, Dout, max_iter=max_iter)
        L = mean_loss(D, Dout, c2, i2, s2)
        print(f"  batched max_iter={max_iter:3d}: {t_ours:6.2f} s, mean loss {L:.3f}, "
              f"ratio {t_loop / t_ours:.1f}x")
    # well-conditioned, both converge
    rng = np.random.default_rng(1)
    Xs = rng.normal(size=(600, 20))
    Ys = Xs @ rng.normal(size=(20, 200)) + rng.standard_t(2, size=(600, 200))
    kw = dict(epsilon=1.35, alpha=1e-4, tol=1e-8)
    t_loop, (c1, i1, s1, it) = timed(looped, Xs, Ys, max_iter=10_000, **kw)
    t_ours, (c2, i2, s2, _) = timed(huber_regression, Xs, Ys, max_iter=100, **kw)
    print(f"well-conditioned N=600 p=20, 200 columns: looped {t_loop:.2f} s, batched "
          f"{t_ours:.3f} s, ratio {t_loop / t_ours:.1f}x, max |coef diff| "
          f"{np.abs(c1 - c2).max():.1e}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
