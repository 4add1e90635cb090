"""What removing the net force and torque of per-atom predictions does to accuracy.

    python benchmarks/net_force_removal.py

The demo's force field (Au5 ring held out, every 16th frame of the other ring runs plus every
core-gold environment, 300 references per type) predicts every 5th frame of the held-out Au5
runs with ``remove_net_force`` "auto" (force and torque), "force" and None. Printed: the
force-vector RMSE, the force-weighted angle and the mean net force of the predictions (the
GFN2-xTB reference forces sum to zero).
"""

import warnings

import numpy as np

from mlmlearn._demo import _training_environments
from mlmlearn.atoms import AtomicEnvironments
from mlmlearn.datasets import load_gold_thiolate_rings
from mlmlearn.forcefield import ForceField, default_direction_model, default_norm_model
from mlmlearn.metrics import force_rmse, weighted_average_angle


def main():
    frames = load_gold_thiolate_rings().frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ff = ForceField(default_norm_model(300), default_direction_model(300))
        ff.fit(_training_environments(frames, 30, 16))
    test = AtomicEnvironments([f for f in frames if len(f) == 30][::5])
    y = test.forces
    print(f"{'remove_net_force':<18}{'RMSE (eV/Å)':>12}{'angle (°)':>11}"
          f"{'mean |net F| (eV/Å)':>21}")
    for mode in ("auto", "force", None):
        F = ff.set_params(remove_net_force=mode).predict(test)
        net = [F[test.structure_index == s].sum(axis=0) for s in np.unique(test.structure_index)]
        print(f"{mode!s:<18}{force_rmse(y, F):>12.3f}{weighted_average_angle(y, F):>11.2f}"
              f"{np.linalg.norm(net, axis=1).mean():>21.3f}")


if __name__ == "__main__":
    main()
