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
from mlmlearn.oamlm import OAMLM, MissingNeighborsError, PermutationAlignment  # noqa: E402
from mlmlearn.oamlm._losses import (  # noqa: E402
    analytic_direction,
    numeric_direction,
    numeric_loss,
    sphere_direction,
)


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
    n, k = 12, 12
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
    with pytest.raises(MissingNeighborsError, match="atom 0 of structure 0 has 1 neighbours"):
        PermutationAlignment(2).neighborhoods(env)


def test_numeric_loss_gradient_and_optimality():
    rng = np.random.default_rng(2)
    k = 30
    r = rng.normal(size=(k, 3))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    d, g = rng.uniform(-1, 1, k), rng.uniform(0, 1, k)
    v = rng.normal(size=3)
    value, grad = numeric_loss(v, d, g, r, 0.25, 0.5)
    by_hand = -np.sum(np.exp(-(((d - r @ v) / 0.25) ** 2) - (g / 0.5) ** 2))
    assert value == pytest.approx(by_hand)
    step = 1e-6
    fd = [
        (
            numeric_loss(v + step * e, d, g, r, 0.25, 0.5)[0]
            - numeric_loss(v - step * e, d, g, r, 0.25, 0.5)[0]
        )
        / (2 * step)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    # at convergence on the sphere the gradient is normal to it (a Lagrange point),
    # and no nearby unit vector does better
    starts = rng.normal(size=(20, 3))
    V = numeric_direction(
        np.tile(d, (20, 1)), np.tile(g, (20, 1)), np.tile(r, (20, 1, 1)), 0.25, 0.5, starts
    )
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0)
    for v in V:
        value, grad = numeric_loss(v, d, g, r, 0.25, 0.5)
        tangential = grad - (grad @ v) * v
        # a stationary point to rounding (the Newton polish after SLSQP): the gradient's
        # own rounding is ~ k eps (2/σ₁²) Σ|w e|, the size of its k summed terms
        e = d - r @ v
        w = np.exp(-((e / 0.25) ** 2) - (g / 0.5) ** 2)
        rounding = k * np.finfo(float).eps * (2 / 0.25**2) * np.abs(w * e).sum()
        assert np.linalg.norm(tangential) < 10 * rounding
        nearby = v + 1e-3 * rng.normal(size=(50, 3))
        nearby /= np.linalg.norm(nearby, axis=1, keepdims=True)
        assert all(numeric_loss(w, d, g, r, 0.25, 0.5)[0] >= value - 1e-9 for w in nearby)


def test_numeric_loss_mask_is_the_reference_filter():
    rng = np.random.default_rng(3)
    n, k = 5, 20
    r = rng.normal(size=(n, k, 3))
    r /= np.linalg.norm(r, axis=2, keepdims=True)
    d, g = rng.uniform(-1, 1, (n, k)), rng.uniform(0, 1, (n, k))
    mask = rng.random((n, k)) < 0.5
    start = rng.normal(size=(n, 3))
    masked = numeric_direction(d, g, r, 0.25, 0.5, start, mask=mask)
    for i in range(n):
        m = mask[i]
        alone = numeric_direction(
            d[i : i + 1, m], g[i : i + 1, m], r[i : i + 1, m], 0.25, 0.5, start[i : i + 1]
        )
        np.testing.assert_allclose(masked[i], alone[0], atol=1e-10)


@pytest.fixture(scope="module")
def fitted_numeric(propane):
    train = AtomicEnvironments(propane[:30], species="C")
    return _model(references=40, loss="numeric").fit(train, train.forces)


def test_numeric_loss_predictions_rotate_and_satisfy_optimality(propane, fitted_numeric):
    model = fitted_numeric
    test = propane[30:34]
    rotation = Rotation.random(random_state=8).as_matrix()
    v = model.predict(AtomicEnvironments(test, species="C"))
    v_rot = model.predict(
        AtomicEnvironments(_rotated(test, rotation, (1.0, 2.0, 3.0)), species="C")
    )
    np.testing.assert_allclose(v_rot, v @ rotation.T, atol=1e-6)


def test_uncertainty_is_invariant_and_grows_away_from_the_data(propane):
    train = AtomicEnvironments(propane[:30], species="H")
    model = _model(references=40).fit(train, train.forces)
    test = propane[30:34]
    v, u = model.predict(AtomicEnvironments(test, species="H"), return_uncertainty=True)
    rotation = Rotation.random(random_state=2).as_matrix()
    _, u_rot = model.predict(
        AtomicEnvironments(_rotated(test, rotation), species="H"), return_uncertainty=True
    )
    np.testing.assert_allclose(u_rot, u, atol=1e-9)
    assert u.shape == (len(v),) and np.all(np.isfinite(u))
    # heptane hydrogens at the other end of the data: less like propane's
    heptane = [f for f in load_alkanes().frames if f.info["run"] == "C7H16_run1"][::100]
    _, u_far = model.predict(AtomicEnvironments(heptane, species="H"), return_uncertainty=True)
    assert np.median(u_far) > 1.5 * np.median(u)
    hot = [a.copy() for a in test]
    for a in hot:
        a.positions += np.random.default_rng(0).normal(scale=0.25, size=a.positions.shape)
    _, u_hot = model.predict(AtomicEnvironments(hot, species="H"), return_uncertainty=True)
    assert np.median(u_hot) > np.median(u)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_huber_training_is_huber_regression_of_the_alignment_products(propane):
    from mlmlearn._distances import euclidean_distances
    from mlmlearn._huber import huber_regression

    train = AtomicEnvironments(propane[:30], species="C")
    plain = _model(references=30).fit(train, train.forces)
    robust = _model(references=30, epsilon=1.2).fit(train, train.forces)
    assert np.all(plain.intercept_c_ == 0) and np.any(robust.intercept_c_ != 0)
    # D_c and D_g rebuilt from the public attributes, then one Huber regression
    unit = train.forces / np.linalg.norm(train.forces, axis=1, keepdims=True)
    alignment = robust.alignment_
    R, g = alignment.align(alignment.neighborhoods(train), robust.reference_neighborhoods_)
    D_c = np.einsum("nkij,kj,ni->nk", R, robust.reference_directions_, unit)
    F = robust.descriptor_.transform(train)
    B, c, _, _ = huber_regression(
        euclidean_distances(F, robust.references_), np.hstack([D_c, g]), epsilon=1.2
    )
    # (rounding of the rebuilt D_c differs in the last bits; the solver's tolerance is 1e-5)
    np.testing.assert_allclose(robust.coef_c_, B[:, :30], atol=1e-5)
    np.testing.assert_allclose(robust.intercept_g_, c[30:], atol=1e-5)
    v = robust.predict(AtomicEnvironments(propane[30:], species="C"))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)


@pytest.mark.parametrize(
    "y, match",
    [
        (np.zeros((5, 2)), r"shape \(6, 3\)"),
        (np.full((6, 3), np.nan), "row 0"),
        (np.vstack([np.zeros(3), np.ones((5, 3))]), "row 0 is a zero force"),
    ],
)
def test_bad_targets(propane, y, match):
    train = AtomicEnvironments(propane[:2], species="C")
    with pytest.raises(ValueError, match=match):
        _model(references=4).fit(train, y)


def test_grid_search_over_descriptor_and_sigma2_reuses_descriptors_and_alignments(
    propane, tmp_path
):
    from joblib import Memory
    from sklearn.model_selection import GridSearchCV, GroupKFold

    from mlmlearn.metrics import angle_scorer

    frames = propane[:36]
    runs = np.repeat(np.arange(6), 6)  # six blocks of consecutive frames
    train = AtomicEnvironments(frames, species="C", groups=runs)
    soap = SOAP(n_max=4, l_max=2, r_cut=3.0, sigma=0.5, memory=Memory(tmp_path / "soap", verbose=0))
    model = OAMLM(
        make_pipeline(soap, MinMaxScaler()),
        references=30,
        memory=Memory(tmp_path / "oamlm", verbose=0),
    )
    grid = {"descriptor__soap__n_max": [3, 4], "sigma2": [0.25, 0.5, 1.0]}
    search = GridSearchCV(model, grid, scoring=angle_scorer, cv=GroupKFold(3), refit=True)
    search.fit(train, train.forces, groups=train.groups)
    scores = search.cv_results_["mean_test_score"]
    assert scores.shape == (6,) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    assert set(search.best_params_) == set(grid)
    # SOAP computed once per setting on the caching root; fit alignments once per
    # (setting, fold) + the refit, not once per σ₂
    soap_calls = list((tmp_path / "soap").rglob("output.pkl"))
    assert len(soap_calls) == 2
    fit_products = [
        p for p in (tmp_path / "oamlm").rglob("output.pkl") if "_fit_products" in str(p)
    ]
    assert len(fit_products) == 2 * 3 + 1
    # the cached search equals an uncached one
    plain = GridSearchCV(
        OAMLM(
            make_pipeline(SOAP(n_max=4, l_max=2, r_cut=3.0, sigma=0.5), MinMaxScaler()),
            references=30,
        ),
        grid,
        scoring=angle_scorer,
        cv=GroupKFold(3),
    ).fit(train, train.forces, groups=train.groups)
    np.testing.assert_allclose(plain.cv_results_["mean_test_score"], scores)


def test_far_references_do_not_underflow_the_weights(propane):
    """With σ₂ tiny every ω = exp(−(g/σ₂)²) underflows; (2.32) is scale-free per row."""
    train = AtomicEnvironments(propane[:20], species="C")
    test = AtomicEnvironments(propane[30:33], species="C")
    model = _model(references=20, sigma2=0.5).fit(train, train.forces)
    wide = model.predict(test)
    model.set_params(sigma2=1e-4)  # g ≳ 0.03 Å everywhere: exp(−(g/σ₂)²) < 1e-300
    sharp, u = model.predict(test, return_uncertainty=True)
    assert np.all(np.isfinite(sharp)) and np.all(np.isfinite(u))
    np.testing.assert_allclose(np.linalg.norm(sharp, axis=1), 1.0)
    assert not np.allclose(sharp, wide)


def test_model_selection_scores_the_oamlm_by_the_weighted_angle(propane):
    """scoring=None (the default) is minus the force-weighted angle, as angle_scorer is."""
    from sklearn.base import is_regressor
    from sklearn.model_selection import GridSearchCV, KFold, cross_validate

    from mlmlearn.metrics import angle_scorer

    env = AtomicEnvironments(propane[:24], species="C")
    model = _model(references=20)
    cv = KFold(3)
    default = cross_validate(model, env, env.forces, cv=cv, return_estimator=True)
    explicit = cross_validate(model, env, env.forces, cv=cv, scoring=angle_scorer)
    np.testing.assert_allclose(default["test_score"], explicit["test_score"], rtol=1e-12)
    for (_, test), fitted, score in zip(
        cv.split(env), default["estimator"], default["test_score"], strict=True
    ):
        by_hand = -weighted_average_angle(env.forces[test], fitted.predict(env[test]))
        assert score == pytest.approx(by_hand, rel=1e-12)
    search = GridSearchCV(model, {"sigma2": [0.25, 1.0]}, cv=cv).fit(env, env.forces)
    assert np.all(search.cv_results_["mean_test_score"] < 0)  # minus degrees
    # not a scikit-learn regressor: a regressor's score is R², the OAMLM's is not
    assert not is_regressor(model)


def test_predict_validates_parameters_set_after_fit(propane):
    from sklearn.utils._param_validation import InvalidParameterError

    env = AtomicEnvironments(propane[:6], species="C")
    model = _model(references=6).fit(env, env.forces)
    model.set_params(sigma2=-1.0)  # a σ sweep sets predict-time parameters after fit
    with pytest.raises(InvalidParameterError, match="'sigma2' parameter of OAMLM"):
        model.predict(env)


def test_the_numeric_start_in_a_periodic_box_is_the_nearest_image(propane):
    """The numeric loss starts from the nearest atom, found at any distance, images included."""
    from ase import Atoms

    from mlmlearn.atoms._neighbors import nearest_neighbors

    # two atoms 3 Å apart in a 4 Å periodic cell along x: the nearest is the image at 1 Å
    atoms = Atoms("CH", positions=[[0.5, 0, 0], [3.5, 0, 0]], cell=[4.0, 20.0, 20.0], pbc=True)
    start = nearest_neighbors(AtomicEnvironments(atoms), 1)[:, 0]
    np.testing.assert_allclose(start, [[-1.0, 0, 0], [1.0, 0, 0]], atol=1e-12)
    free = atoms.copy()
    free.pbc = False
    np.testing.assert_allclose(
        nearest_neighbors(AtomicEnvironments(free), 1)[:, 0], [[3.0, 0, 0], [-3.0, 0, 0]]
    )
    with pytest.raises(MissingNeighborsError, match="atom 0 of structure 0 has 1 neighbours"):
        nearest_neighbors(AtomicEnvironments(free), 2)
