"""Rings (paper IV fig. 6): a force field with the ring size held out, ML-BFGS and GFN2-xTB checks.

    python benchmarks/experiment_rings.py [--sizes 4 5 6] [--stride 8] [--references 500]

For each held-out ring size: paper IV's force field trained on the bundled GFN2-xTB ring MD of
the other sizes (every ``--stride``-th frame, ``--references`` RS-maximin references per type),
its per-type accuracy on the held-out ring's MD frames, and ML-BFGS (maxstep 0.1 Å, ≤ 200
steps, fmax 0.1 eV/Å, stopped when the predicted uncertainty exceeds 2 Å) against a GFN2-xTB
BFGS (ASE defaults, fmax 0.05 eV/Å) from three starts: the ring as ``gold_thiolate_ring``
builds it (paper IV), the ring's last 600 K MD frame, and the GFN2-xTB minimum itself. GFN2-xTB
single points every 5 ML steps give the energy above the GFN2 minimum and the heavy-atom RMSD
to it. This is ``mlmlearn demo`` (:func:`mlmlearn._demo.ring_demo`) run for every size and
start with a larger model; the output goes to standard output and ``--output``.
"""

import argparse
import io
import os
import sys

from mlmlearn._demo import ring_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 5, 6])
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--references", type=int, default=500)
    parser.add_argument("--output", default="benchmarks/results/rings")
    args = parser.parse_args(argv)
    for n in args.sizes:
        ff = None
        for start in ("built", "md", "minimum"):
            buffer = io.StringIO()
            summary = ring_demo(n, stride=args.stride, references=args.references, start=start,
                                force_field=ff, output=os.path.join(args.output, f"Au{n}_{start}"),
                                out=buffer, log=None)
            ff = summary["force_field"]
            text = buffer.getvalue()
            if start != "built":  # the model and its accuracy table are printed once per size
                text = text[text.index("\nML-BFGS"):]
            print(f"=== Au{n}(SCH3){n}, start: {start} ===\n{text}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
