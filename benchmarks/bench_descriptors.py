"""Bundled data set sizes, and SOAP/MBTR throughput of mlmlearn's transformers vs dscribe.

    python benchmarks/bench_descriptors.py

Prints, for each bundled data set, the number of structures and environments
per atom type; then the time of mlmlearn's ``SOAP``/``MBTR`` transform beside
dscribe called directly the way a user would (a loop over ``create`` per
structure, and one ``create`` on the list), on the Au25(SCH3)18 frames with
paper IV's SOAP (r_cut 4 Å, n_max 7, l_max 4, σ 0.25) and paper II's MBTR; and
what a ``memory=`` cache hit costs. Last, the neighbour list that typing and the
alignments share (5 Å, per structure): mlmlearn's k-d tree path for molecules and
clusters, ASE's ``neighbor_list`` (the periodic path) on the same frames, and a
cache hit (what every later typing, selection or alignment pays).
"""

import tempfile
import time
import warnings

import numpy as np
from _common import timed
from ase.data import atomic_numbers
from dscribe.descriptors import MBTR as DscribeMBTR
from dscribe.descriptors import SOAP as DscribeSOAP
from threadpoolctl import threadpool_limits

from mlmlearn.atoms import MBTR, SOAP, AtomicEnvironments, neighbor_list
from mlmlearn.datasets import load_alkanes, load_au25, load_gold_thiolate_rings


def sizes():
    print("data set              structures  environments per type")
    for name, loader in [
        ("alkanes", load_alkanes),
        ("gold-thiolate rings", load_gold_thiolate_rings),
        ("Au25(SCH3)18", load_au25),
    ]:
        data, seconds = timed(loader)[::-1]
        env = AtomicEnvironments(data.frames)
        types, counts = np.unique(env.atom_types, return_counts=True)
        per_type = ", ".join(f"{t} {c}" for t, c in zip(types, counts, strict=True))
        print(f"{name:22s}{len(data.frames):>10d}  {per_type}   (load {seconds:.1f} s)")


def cpu_timed(fn, *args, repeat=5):
    """Best CPU time of ``repeat`` calls (one BLAS thread) and the last result."""
    best, result = float("inf"), None
    with threadpool_limits(1):
        for _ in range(repeat):
            t0 = time.process_time()
            result = fn(*args)
            best = min(best, time.process_time() - t0)
    return best, result


def soap_wrapper_cost(frames, label, centre=None):
    """SOAP.transform against dscribe's create called directly, same settings, one run.

    The peers are what a user would write: a loop over ``create`` per structure
    (with ``centers=`` when only some atoms are centres) stacked with ``np.vstack``,
    and one ``create`` on the list. Target: ratio >= 1.0 (the wrapper costs nothing)
    with identical rows.
    """
    params = dict(r_cut=4.0, n_max=7, l_max=4, sigma=0.25)
    env = AtomicEnvironments(frames, species=centre)
    ours = SOAP(**params).fit(env)
    theirs = DscribeSOAP(species=ours.species_, **params)
    z = None if centre is None else atomic_numbers[centre]

    def centres(a):
        return None if z is None else np.flatnonzero(a.numbers == z).tolist()

    t_ours, x_ours = cpu_timed(ours.transform, env)
    t_loop, x_loop = cpu_timed(lambda: np.vstack([theirs.create(a, centers=centres(a))
                                                  for a in frames]))
    t_list, x_list = cpu_timed(lambda: theirs.create(
        frames, centers=None if z is None else [centres(a) for a in frames]))
    x_list = np.concatenate(list(x_list)) if isinstance(x_list, list) else x_list
    diff = max(np.abs(x_ours - x_loop).max(), np.abs(x_ours - x_list.reshape(x_ours.shape)).max())
    print(f"\nSOAP.transform vs dscribe, {label}: {len(env)} environments, "
          f"{x_ours.shape[1]} features (CPU time, one thread)")
    print(f"  mlmlearn SOAP.transform      {t_ours:7.3f} s  {len(env) / t_ours:9.0f} env/s")
    print(f"  dscribe loop over create     {t_loop:7.3f} s  ratio loop/ours {t_loop / t_ours:.2f} "
          "(target >= 1.0)")
    print(f"  dscribe create(list)         {t_list:7.3f} s  ratio list/ours {t_list / t_ours:.2f}")
    print(f"  outputs identical: max |ours - dscribe| = {diff:.1e}")


def soap_throughput(frames):
    env = AtomicEnvironments(frames)
    params = dict(r_cut=4.0, n_max=7, l_max=4, sigma=0.25)
    ours = SOAP(**params).fit(env)
    t_ours, x_ours = timed(ours.transform, env, repeat=3)
    t_two, _ = timed(SOAP(**params, n_jobs=2).fit(env).transform, env, repeat=3)
    n = len(env)
    print(f"\nSOAP, {len(frames)} Au25 frames, {n} environments, {x_ours.shape[1]} features "
          "(wall time)")
    print(f"  mlmlearn SOAP.transform      {t_ours:7.2f} s  {n / t_ours:9.0f} env/s")
    print(f"  mlmlearn n_jobs=2            {t_two:7.2f} s  speed-up {t_ours / t_two:.2f}")
    gold = env.select(species="Au")
    t_gold, _ = timed(ours.transform, gold, repeat=3)
    print(f"  Au centres only ({len(gold)})      {t_gold:7.2f} s  {len(gold) / t_gold:9.0f} env/s")
    with tempfile.TemporaryDirectory() as cache:
        cached = SOAP(**params, memory=cache).fit(env)
        t_miss, _ = timed(cached.transform, env)
        t_hit, _ = timed(cached.transform, env[np.arange(0, n, 2)], repeat=3)
    print(f"  memory: first call {t_miss:.2f} s, cache hit for half the rows {t_hit:.3f} s")


def mbtr_throughput(frames):
    ours = MBTR().fit(frames)
    theirs = DscribeMBTR(
        species=ours.species_,
        geometry={"function": "inverse_distance"},
        grid={"min": 0.0, "max": 1.2, "n": 100, "sigma": 0.045},
        weighting={"function": "exp", "scale": 0.8, "threshold": 1e-5},
    )
    t_ours, x_ours = timed(ours.transform, frames, repeat=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        t_loop, x_loop = timed(lambda: np.vstack([theirs.create(a) for a in frames]), repeat=3)
    assert np.allclose(x_ours, x_loop)
    n = len(frames)
    print(f"\nMBTR k2, {n} Au25 frames, {x_ours.shape[1]} features")
    print(f"  mlmlearn MBTR.transform      {t_ours:7.2f} s  {n / t_ours:9.1f} structures/s")
    print(f"  dscribe loop over create     {t_loop:7.2f} s  ratio loop/ours {t_loop / t_ours:.2f}")
    t_two, _ = timed(MBTR(n_jobs=2).fit(frames).transform, frames, repeat=3)
    print(f"  mlmlearn n_jobs=2            {t_two:7.2f} s  speed-up {t_ours / t_two:.2f}")


def neighbor_list_throughput(frames, cutoff=5.0):
    from ase.neighborlist import neighbor_list as ase_neighbor_list

    n = len(frames)
    print(f"\nneighbour lists within {cutoff} Å, {n} Au25 frames")
    t_ours, _ = timed(lambda: [neighbor_list(a, cutoff) for a in frames], repeat=3)
    t_ase, _ = timed(lambda: [ase_neighbor_list("ijdD", a, cutoff) for a in frames], repeat=3)
    env = AtomicEnvironments(frames)
    env.neighbors(cutoff)
    t_hit, _ = timed(lambda: [env.neighbor_list(s, cutoff) for s in range(n)], repeat=3)
    print(f"  mlmlearn (k-d tree)          {t_ours:7.3f} s  {n / t_ours:9.1f} structures/s")
    print(f"  ASE neighbor_list            {t_ase:7.3f} s  ratio ASE/ours {t_ase / t_ours:.1f}")
    print(f"  cached (shared by all uses)  {t_hit:7.4f} s")


if __name__ == "__main__":
    sizes()
    frames = load_au25().frames[-100:]
    soap_wrapper_cost(frames, "100 Au25(SCH3)18 frames, every atom")
    soap_wrapper_cost(frames, "100 Au25(SCH3)18 frames, H centres", centre="H")
    soap_wrapper_cost(load_alkanes().frames[:2000], "2 000 alkane frames, every atom")
    soap_throughput(frames)
    mbtr_throughput(frames)
    neighbor_list_throughput(frames)
