"""EMLM (K = 2000 RS-maximin references) against kernel ridge regression (RBF), fit + predict.

    python benchmarks/bench_emlm_vs_krr.py [--blas-threads 1]

Data: Friedman #1 (scikit-learn's generator), 16 000 training and 4 000 test samples,
10 features, noise 1.0. Target: EMLM at least 5x faster than the peer, comparable R².

Two peers, the same model (``(K + αI) c = y`` with the RBF kernel, α = 0.1, γ = 0.05):
scikit-learn's ``KernelRidge``, and the same solve written with SciPy's
``cho_factor``/``cho_solve``. Each peer runs in a subprocess of its own, so that a
crash is reported instead of ending the benchmark: with two OpenBLAS threads, every
Cholesky factorisation of this 16 000 × 16 000 matrix tried here dies with SIGSEGV
inside OpenBLAS (``dpotrf`` → its threaded ``dsyrk`` → ``dgemm_oncopy`` in a worker
thread): scikit-learn's ``scipy.linalg.solve(assume_a="pos")``, ``cho_factor`` upper or
lower, and NumPy's ``cholesky`` (its own OpenBLAS build) alike; n = 15 000 runs,
15 800 crashes, and one thread runs (OpenBLAS 0.3.30 and 0.3.31, SciPy 1.17.1). A peer
that dies is reported with its signal and, when more than one BLAS thread was asked
for, run again with one thread (said in the output). The predictions of the two peers
are compared (the same model: they agree to the conditioning of K + αI). Times are CPU
times of fit + predict with ``--blas-threads`` BLAS threads (one by default, the
project's timing convention), wall times beside.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.datasets import make_friedman1
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

ALPHA, GAMMA = 0.1, 0.05
PEERS = {"sklearn": "scikit-learn KernelRidge", "cholesky": "cho_factor/cho_solve"}


def data(n_train, n_test):
    X, y = make_friedman1(n_samples=n_train + n_test, noise=1.0, random_state=0)
    X = StandardScaler().fit(X[:n_train]).transform(X)
    return X[:n_train], X[n_train:], y[:n_train], y[n_train:]


def fit_predict_sklearn(Xtr, ytr, Xte):
    from sklearn.kernel_ridge import KernelRidge

    return KernelRidge(kernel="rbf", alpha=ALPHA, gamma=GAMMA).fit(Xtr, ytr).predict(Xte)


def fit_predict_cholesky(Xtr, ytr, Xte):
    """KernelRidge's model solved by Cholesky: ``(K + αI) c = y``, ``ŷ = K(X*, X) c``."""
    from scipy.linalg import cho_factor, cho_solve
    from sklearn.metrics.pairwise import rbf_kernel

    K = rbf_kernel(Xtr, gamma=GAMMA)
    K.flat[:: len(Xtr) + 1] += ALPHA
    dual = cho_solve(cho_factor(K, lower=True, overwrite_a=True, check_finite=False), ytr,
                     check_finite=False)
    return rbf_kernel(Xte, Xtr, gamma=GAMMA) @ dual


def timed(fn, *args):
    """CPU and wall time of one call, and its result."""
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn(*args)
    return time.process_time() - c0, time.perf_counter() - w0, result


def run_peer(name, args):
    """Child process: fit + predict one peer, save predictions, print times as JSON."""
    Xtr, Xte, ytr, yte = data(args.n_train, args.n_test)
    fn = {"sklearn": fit_predict_sklearn, "cholesky": fit_predict_cholesky}[name]
    with threadpool_limits(args.blas_threads):
        cpu, wall, pred = timed(fn, Xtr, ytr, Xte)
    np.save(args.out, pred)
    print(json.dumps({"cpu": cpu, "wall": wall, "r2": r2_score(yte, pred)}), flush=True)


def peer_in_subprocess(name, args, threads, out):
    """Run one peer in a child process; returns (result dict or None, what happened)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--peer", name, "--out", out,
           "--blas-threads", str(threads), "--n-train", str(args.n_train),
           "--n-test", str(args.n_test)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    if proc.returncode < 0:
        what = f"died with {signal.Signals(-proc.returncode).name} (exit {proc.returncode})"
    else:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        what = f"failed with exit {proc.returncode}: {last}"
    return None, f"{what} with {threads} BLAS thread(s)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=16_000)
    parser.add_argument("--n-test", type=int, default=4_000)
    parser.add_argument("--references", type=int, default=2000)
    parser.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return run_peer(args.peer, args)

    from mlmlearn import EMLM

    Xtr, Xte, ytr, yte = data(args.n_train, args.n_test)
    with threadpool_limits(args.blas_threads):
        cpu_emlm, wall_emlm, pred_emlm = timed(
            lambda: EMLM(references=args.references, beta=1e-2).fit(Xtr, ytr).predict(Xte))
    print(f"N={args.n_train} train, {args.n_test} test, EMLM K={args.references}; "
          f"{args.blas_threads} BLAS thread(s); CPU time (wall) of fit + predict")
    print(f"{'EMLM':26s} R2 {r2_score(yte, pred_emlm):.4f}  {cpu_emlm:7.2f} s "
          f"({wall_emlm:.2f} s)")
    results, preds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, label in PEERS.items():
            out = os.path.join(tmp, f"{name}.npy")
            threads = args.blas_threads
            result, failure = peer_in_subprocess(name, args, threads, out)
            if failure:
                print(f"{label:26s} {failure}")
                if threads > 1:
                    threads = 1
                    result, again = peer_in_subprocess(name, args, threads, out)
                    print(f"{'':26s} run again with 1 BLAS thread: "
                          f"{'ran' if result else again}")
            if result is None:
                continue
            result["threads"] = threads
            results[name], preds[name] = result, np.load(out)
            print(f"{label:26s} R2 {result['r2']:.4f}  {result['cpu']:7.2f} s "
                  f"({result['wall']:.2f} s)"
                  + ("" if threads == args.blas_threads else f" with {threads} BLAS thread"))
    for name, result in results.items():
        unlike = ("" if result["threads"] == args.blas_threads else
                  f"; peer on {result['threads']} BLAS thread, EMLM on {args.blas_threads}")
        print(f"ratio {PEERS[name]} / EMLM CPU time: {result['cpu'] / cpu_emlm:.1f}x "
              f"(target >= 5x{unlike})")
    if not results:
        print("no peer ran: no ratio (see the failures above)")
    if len(preds) == 2:
        diff = np.abs(preds["sklearn"] - preds["cholesky"]).max()
        print(f"peers agree (the same model): max |ŷ_sklearn - ŷ_cholesky| = {diff:.1e} "
              f"(targets' std {yte.std():.2f})")
    else:
        print("peer agreement not checked: only one peer ran")


if __name__ == "__main__":
    main()
