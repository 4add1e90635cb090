"""Reference calls of the hybrid optimizer against a plain GFN2-xTB BFGS (Au5 ring held out).

    python benchmarks/hybrid_quick.py

The demo's force field (Au5 ring held out, every 16th frame of the other ring runs plus every
core-gold environment, 300 references per type) and GFN2-xTB (tblite, one thread). From the
Au5 ring's last 600 K frame and from the built ring, printed per start: GFN2-xTB calls of ASE's
BFGS (defaults, fmax 0.05 eV/Å), then for ``hybrid_optimize`` with and without refitting:
reference calls, final energy minus the plain BFGS minimum (eV), converged (on reference
forces, fmax 0.05 eV/Å) and wall seconds.
"""

import time
import warnings

from ase.optimize import BFGS
from tblite.ase import TBLite
from threadpoolctl import threadpool_limits

from mlmlearn._demo import _training_environments
from mlmlearn.applications.hybrid import hybrid_optimize
from mlmlearn.datasets import gold_thiolate_ring, load_gold_thiolate_rings
from mlmlearn.forcefield import ForceField, default_direction_model, default_norm_model


class Counting(TBLite):
    """tblite's calculator, counting its calculations."""

    calls = 0

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        return super().calculate(*args, **kwargs)


def main():
    frames = load_gold_thiolate_rings().frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ff = ForceField(default_norm_model(300), default_direction_model(300)).fit(
            _training_environments(frames, 30, 16))
    held = [f for f in frames if len(f) == 30]
    md = [f for f in held if f.info["temperature_K"] == 600.0][-1].copy()
    md.calc = None
    print("start | plain BFGS calls | hybrid+refit: calls, dE, converged, s | "
          "hybrid: calls, dE, converged, s")
    for name, start in (("Au5 600 K frame", md), ("Au5 built", gold_thiolate_ring(5))):
        with threadpool_limits(1):
            plain = start.copy()
            Counting.calls = 0
            plain.calc = Counting(method="GFN2-xTB", verbosity=0)
            BFGS(plain, logfile=None).run(fmax=0.05, steps=500)
            row = [name, Counting.calls]
            for refit in (True, False):
                t0 = time.perf_counter()
                result = hybrid_optimize(start.copy(), ff, TBLite(method="GFN2-xTB", verbosity=0),
                                         fmax=0.05, refit=refit)
                row += [result.n_reference_calls,
                        round(float(result.reference_energies[-1] - plain.get_potential_energy()),
                              4), result.converged, round(time.perf_counter() - t0, 1)]
        print(" | ".join(str(v) for v in row), flush=True)


if __name__ == "__main__":
    main()
