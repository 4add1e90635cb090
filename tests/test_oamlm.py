"""OAMLM (work in progress): equivariance, exact recovery, the losses against oracles."""

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("numba")
from scipy.optimize import minimize  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from mlmlearn.atoms import SOAP, AtomicEnvironments  # noqa: E402
from mlmlearn.datasets import load_alkanes  # noqa: E402
from mlmlearn.metrics import weighted_average_angle  # noqa: E402
from mlmlearn.oamlm import OAMLM, MissingNeighboursError, PermutationAlignment  # noqa: E402
from mlmlearn.oamlm._losses import analytic_direction, sphere_direction  # noqa: E402


@pytest.fixture(scope="module")
def propane():
    data = load_alkanes()
    frames = [f for f in data.frames if f.info["run"] == "C3H8_run1"]
    return frames[::25]


def _model(**kwargs):
    soap = SOAP(n_max=4, l_max=2, r_cut=3.0, sigma=0.5)
    return OAMLM(make_pipeline(soap, MinMaxScaler()), **kwargs)


def _rotated(frames, rotation, shift=(0.0, 0.0, 0.0)):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        b = a.copy()
        b.positions = a.positions @ rotation.T + np.asarray(shift)
        b.calc = SinglePointCalculator(b, forces=a.get_forces() @ rotation.T)
        out.append(b)
    return out


@pytest.mark.parametrize("loss", ["analytic", "sphere"])
def test_predictions_rotate_with_the_structure(propane, loss):
    train = AtomicEnvironments(propane[:30], species="C")
    model = _model(references=40, loss=loss).fit(train, train.forces)
    test = propane[30:36]
    rotation = Rotation.random(random_state=3).as_matrix()
    v = model.predict(AtomicEnvironments(test, species="C"))
    v_rot = model.predict(
        AtomicEnvironments(_rotated(test, rotation, (3.0, -1.0, 7.0)), species="C")
    )
    np.testing.assert_allclose(v_rot, v @ rotation.T, atol=1e-6)
    # atom order does not matter
    order = np.random.default_rng(0).permutation(len(test[0]))
    permuted = [a[order] for a in test]
    v_perm = model.predict(AtomicEnvironments(permuted, species="C"))
    for k, a in enumerate(test):
        # environments come in atom order: the carbons of the permuted structure
        # are the original carbons in the order they appear in ``order``
        carbons = [c for c in order if a.numbers[c] == 6]
        original_rows = np.searchsorted(np.flatnonzero(a.numbers == 6), carbons)
        np.testing.assert_allclose(v_perm[3 * k : 3 * k + 3], v[3 * k + original_rows], atol=1e-6)


@pytest.mark.filterwarnings("ignore:the distance system:scipy.linalg.LinAlgWarning")
def test_rotated_copies_of_references_are_recovered_exactly(propane):
    train = AtomicEnvironments(propane[:20], species="H")
    model = _model(references="all", sigma2=0.01, beta=1e-8).fit(train, train.forces)
    rotation = Rotation.random(random_state=5).as_matrix()
    copies = AtomicEnvironments(_rotated(propane[:20], rotation), species="H")
    v = model.predict(copies)
    # exact up to the interpolation error of the singular (all-references) distance system
    assert weighted_average_angle(copies.forces, v) < 0.05  # degrees


def test_losses_against_oracles():
    rng = np.random.default_rng(1)
    n, k = 40, 12
    r = rng.normal(size=(n, k, 3))
    r /= np.linalg.norm(r, axis=2, keepdims=True)
    omega, d = rng.random((n, k)), rng.uniform(-1, 1, (n, k))
    by_hand = np.array(
        [(omega[i, :, None] * d[i, :, None] * r[i]).sum(0) / omega[i].sum() for i in range(n)]
    )
    np.testing.assert_allclose(
        analytic_direction(omega, d, r), by_hand / np.linalg.norm(by_hand, axis=1, keepdims=True)
    )
    v = sphere_direction(omega, d, r)

    def loss(x, i):
        x = x / np.linalg.norm(x)
        return 0.5 * np.sum(omega[i] * (r[i] @ x - d[i]) ** 2)

    for i in range(n):
        found = min(
            minimize(
                loss,
                x0,
                args=(i,),
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 5000},
            ).fun
            for x0 in rng.normal(size=(4, 3))
        )
        assert loss(v[i], i) <= found + 1e-10


def test_missing_neighbours_name_the_atom():
    from ase import Atoms

    env = AtomicEnvironments(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]))
    with pytest.raises(MissingNeighboursError, match="atom 0 of structure 0 has 1 neighbours"):
        PermutationAlignment(2).neighbourhoods(env)
