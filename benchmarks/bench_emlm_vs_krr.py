"""EMLM (K = 2000 RS-maximin references) against KernelRidge (RBF), fit + predict.

Data: Friedman #1 (scikit-learn's generator), 16 000 training and 4 000 test samples,
10 features, noise 1.0 — synthetic until the bundled atomistic data exists.
Prints R² of each and the time ratio. Target: EMLM at least 5x faster, comparable R².
"""

from _common import timed
from sklearn.datasets import make_friedman1
from sklearn.kernel_ridge import KernelRidge
from sklearn.preprocessing import StandardScaler

from mlmlearn import EMLM


def main(n_train=16_000, n_test=4_000, n_references=2000):
    X, y = make_friedman1(n_samples=n_train + n_test, noise=1.0, random_state=0)
    X = StandardScaler().fit(X[:n_train]).transform(X)
    Xtr, Xte, ytr, yte = X[:n_train], X[n_train:], y[:n_train], y[n_train:]

    def run(model):
        model.fit(Xtr, ytr)
        return model.score(Xte, yte)

    t_emlm, r2_emlm = timed(run, EMLM(references=n_references, beta=1e-2))
    t_krr, r2_krr = timed(run, KernelRidge(kernel="rbf", alpha=0.1, gamma=0.05))
    print(f"N={n_train} train, {n_test} test, EMLM K={n_references}")
    print(f"EMLM        R2 {r2_emlm:.4f}  fit+predict {t_emlm:7.2f} s")
    print(f"KernelRidge R2 {r2_krr:.4f}  fit+predict {t_krr:7.2f} s")
    print(f"ratio KernelRidge/EMLM time: {t_krr / t_emlm:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
