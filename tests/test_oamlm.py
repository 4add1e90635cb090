"""OAMLM (work in progress): equivariance, exact recovery, the losses against oracles."""

import warnings

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("numba")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
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


def _equivariance_bound(model, env, moved, rotation, frames, rows=None):
    """First-order bound on ``|v'[rows[i]] − R v[i]|`` per environment of ``env``.

    ``moved`` holds the same environments with every structure rotated by ``rotation``
    (and translated); row ``rows[i]`` of ``moved`` is row i of ``env``. ``frames`` are
    all structures involved (for the size of the coordinates). Each quantity a
    prediction rests on is bounded in how far its two computations can differ, and the
    bounds are carried through the loss to first order:

    * neighbour vectors: rotating and translating a coordinate rounds it by at most
      ``γ₄(|p|·|R_i| + |shift|)``, a difference of two by ``u`` more, and ``rotation``
      is a rotation to ``‖RᵀR − I‖_F``;
    * alignments: each rotation is within :func:`_numerics.superposition_bounds` of the
      exact optimum of its data, and the exact optima of rotated data are the rotated
      optima; the accuracy (2.25) moves by ``|δR|Σ|x_m|/n`` and the points' errors;
    * descriptors: SOAP's own rotational invariance (dscribe's, measured here as
      ``|F' − F|``) and the distance kernel's bound (:func:`_numerics.distance_bound`)
      give ``δD_in``, and ``δd = δD_in|B| + 2γ_{K+1}(|D_in||B| + |c|)``;
    * weights (2.31): ``δ ln ω_j ≤ δx_j + max_k δx_k`` for ``x = (g/σ₂)²``, plus rounding;
    * the loss: "analytic" is u/|u| with u = Σ ω d r, so ``|δv| ≤ 2|δu|/|u|``; "sphere"
      solves ``(A − μI)v = b`` on |v| = 1, so ``|δv| ≤ ‖M⁻¹‖(1 + κ(M))(‖δA‖ + ‖δb‖)``
      with M = A − μI (the normalisation fixes μ's change), LAPACK's eigh taken
      backward stable to γ₂₇‖A‖; "numeric" is a stationary point of (2.29) polished to
      the gradient's rounding, so ``|δv| ≤ (|δ∇J| + 2ρ)/λ_min`` of the Riemannian
      Hessian, provided no reference crosses the filter g ≤ d_g (checked).
    """
    from _numerics import U, distance_bound, gamma, superposition_bounds

    from mlmlearn._distances import euclidean_distances
    from mlmlearn.oamlm._superpose import best_alignments

    rows = np.arange(len(env)) if rows is None else np.asarray(rows)
    alignment = model.alignment_
    assert isinstance(alignment, PermutationAlignment) and alignment.accuracy == "mean"
    S, T, K = model.reference_neighborhoods_, model.reference_directions_, model.n_references_
    P1 = np.asarray(alignment.neighborhoods(env), dtype=float)
    P2 = np.asarray(alignment.neighborhoods(moved), dtype=float)[rows]
    n, n_points = P1.shape[:2]
    off = np.linalg.norm(rotation.T @ rotation - np.eye(3))  # ≥ |R − nearest rotation|
    shift = max(np.abs(a.positions).max() for a in frames)  # |p| and |p R + shift| bound
    coord = gamma(4) * (np.sqrt(3) * shift * (1 + off) + shift)
    size = np.linalg.norm(P1, axis=2)  # (n, n_points)
    dP1 = np.sqrt(3 * ((U * size) ** 2).sum(axis=1))
    dP2 = np.sqrt(3 * ((2 * coord + U * size) ** 2).sum(axis=1)) + np.linalg.norm(
        P1, axis=(1, 2)) * off
    orders = np.array([(0, *(1 + np.asarray(o))) for o in alignment.orderings(n_points - 1)])
    R1, g1, best1 = best_alignments(P1, S, orders)
    _, g2, best2 = best_alignments(P2, S, orders)
    np.testing.assert_array_equal(best1, best2)  # premise: no near tie between orderings
    X = S[np.arange(K)[None, :, None], orders[best1]]  # (n, K, n_points, 3): S_j ordered
    X = X.reshape(n * K, n_points, 3)
    Y1 = np.repeat(P1, K, axis=0)
    Y2 = np.repeat(P2, K, axis=0)
    b1 = superposition_bounds(X, Y1, dY=np.repeat(dP1, K))
    b2 = superposition_bounds(X, Y2, dY=np.repeat(dP2, K))
    dR = (b1.rotation["qcp"] + b2.rotation["qcp"]).reshape(n, K) + off
    xs = np.linalg.norm(X, axis=2).sum(axis=1).reshape(n, K)
    ys = np.repeat(size.sum(axis=1), K).reshape(n, K)
    rounding = (gamma(4) * np.sqrt(3) + gamma(n_points + 4)) * (xs + ys) / n_points
    dg = (dR * xs + np.sqrt(n_points) * (dP1 + dP2)[:, None]) / n_points + 2 * rounding
    r = np.einsum("nkij,kj->nki", R1, T)
    # descriptors and predicted products
    F1 = model.descriptor_.transform(env)
    F2 = model.descriptor_.transform(moved)[rows]
    D1 = euclidean_distances(F1, model.references_)
    D2 = euclidean_distances(F2, model.references_)
    dD = (np.linalg.norm(F2 - F1, axis=1)[:, None] + distance_bound(F1, model.references_, D1)
          + distance_bound(F2, model.references_, D2))
    Dmax = np.maximum(D1, D2)

    def product(B, c):
        value = D1 @ B + c
        return value, dD @ np.abs(B) + 2 * gamma(K + 1) * (Dmax @ np.abs(B) + np.abs(c))

    d_c, dd_c = product(model.coef_c_, model.intercept_c_)
    d_g, dd_g = product(model.coef_g_, model.intercept_g_)
    x = (g1 / model.sigma2) ** 2
    dx = (2 * g1 * dg + dg**2) / model.sigma2**2 + 2 * gamma(3) * x
    omega = np.exp(-(x - x.min(axis=1, keepdims=True)))
    dln = dx + dx.max(axis=1, keepdims=True) + 4 * U * (x + x.min(axis=1, keepdims=True)) + 4 * U
    domega = omega * np.expm1(dln)
    u = np.einsum("nk,nk,nki->ni", omega, d_c, r)
    du = ((domega * np.abs(d_c) + omega * dd_c + omega * np.abs(d_c) * dR).sum(axis=1)
          + 2 * gamma(K + 3) * (omega * np.abs(d_c)).sum(axis=1))
    finish = 2 * gamma(4) + off + np.sqrt(3) * gamma(3)  # normalising, R v, R not orthogonal
    if model.loss == "analytic":
        return 2 * du / np.linalg.norm(u, axis=1) + finish
    if model.loss == "sphere":
        v = model.predict(env)
        A = np.einsum("nk,nki,nkj->nij", omega, r, r)
        b = np.einsum("nk,nk,nki->ni", omega, d_c, r)
        mu = np.einsum("ni,ni->n", v, np.einsum("nij,nj->ni", A, v) - b)
        lam = np.linalg.eigvalsh(A - mu[:, None, None] * np.eye(3))
        assert np.all(lam[:, 0] > 0)  # μ below A's spectrum: not the hard case
        normA = np.linalg.norm(A, axis=(1, 2))
        dA = ((domega + 2 * omega * dR + omega * dR**2).sum(axis=1)
              + 2 * (gamma(K + 2) * omega.sum(axis=1) + gamma(27) * normA))
        return (1 + lam[:, 2] / lam[:, 0]) * (dA + du) / lam[:, 0] + finish
    # numeric: the same filtered references on both sides, then the stationary point
    keep = g1 <= d_g
    margin = np.abs(g1 - d_g) > dg + dd_g
    none = ~keep.any(axis=1)
    assert np.all(margin | none[:, None]) and not none.any()
    v = model.predict(env)
    s1, s2 = model.sigma1, model.sigma2
    e = d_c - np.einsum("nki,ni->nk", r, v)
    w = np.where(keep, np.exp(-((e / s1) ** 2) - (g1 / s2) ** 2), 0.0)
    de = dd_c + dR
    dw = w * np.expm1((2 * np.abs(e) * de + de**2) / s1**2 + dx + 8 * U)
    grad = -(2 / s1**2) * np.einsum("nk,nki->ni", w * e, r)
    hess = -(2 / s1**2) * np.einsum("nk,nki,nkj->nij", w * (2 * e**2 / s1**2 - 1), r, r)
    bound = np.empty(n)
    for i in range(n):
        basis = np.linalg.svd(np.eye(3) - np.outer(v[i], v[i]))[0][:, :2]
        h = basis.T @ hess[i] @ basis - (v[i] @ grad[i]) * np.eye(2)
        lam_min = np.linalg.eigvalsh(h)[0]
        assert lam_min > 0
        we = np.abs(w[i] * e[i])
        dgrad = (2 / s1**2) * (dw[i] * np.abs(e[i]) + w[i] * de[i] + we * dR[i]).sum()
        # terms numeric_direction drops (weight below 1e-16 of the largest), and the
        # rounding of the gradient the polish stops at, on each side
        dgrad += (2 / s1**2) * K * 1e-16 * w[i].max() * np.abs(e[i]).max()
        rho = (2 / s1**2) * (gamma(K + 3) + gamma(8)) * we.sum()
        bound[i] = (dgrad + 2 * rho) / lam_min
    return bound + finish


@pytest.mark.parametrize("loss", ["analytic", "sphere"])
def test_predictions_rotate_with_the_structure(propane, loss):
    train = AtomicEnvironments(propane[:30], species="C")
    model = _model(references=40, loss=loss).fit(train, train.forces)
    test = propane[30:36]
    rotation = Rotation.random(random_state=3).as_matrix()
    env = AtomicEnvironments(test, species="C")
    moved_frames = _rotated(test, rotation, (3.0, -1.0, 7.0))
    moved = AtomicEnvironments(moved_frames, species="C")
    v, v_rot = model.predict(env), model.predict(moved)
    # equal to the rounding of the inputs carried through the model (_equivariance_bound)
    bound = _equivariance_bound(model, env, moved, rotation, test + moved_frames)
    assert np.all(np.linalg.norm(v_rot - v @ rotation.T, axis=1) <= bound)
    # atom order does not matter
    order = np.random.default_rng(0).permutation(len(test[0]))
    permuted = [a[order] for a in test]
    v_perm = model.predict(AtomicEnvironments(permuted, species="C"))
    rows = []
    for k, a in enumerate(test):
        # environments come in atom order: the carbons of the permuted structure
        # are the original carbons in the order they appear in ``order``
        carbons = [c for c in order if a.numbers[c] == 6]
        original_rows = np.searchsorted(np.flatnonzero(a.numbers == 6), carbons)
        rows.append(3 * k + np.argsort(original_rows))
    rows = np.concatenate(rows)  # row of the permuted set holding each original row
    bound = _equivariance_bound(
        model, env, AtomicEnvironments(permuted, species="C"), np.eye(3), test, rows
    )
    assert np.all(np.linalg.norm(v_perm[rows] - v, axis=1) <= bound)


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
    env = AtomicEnvironments(test, species="C")
    moved_frames = _rotated(test, rotation, (1.0, 2.0, 3.0))
    moved = AtomicEnvironments(moved_frames, species="C")
    v, v_rot = model.predict(env), model.predict(moved)
    # the same local minimum of (2.29), moved by the inputs' rounding over its curvature
    bound = _equivariance_bound(model, env, moved, rotation, test + moved_frames)
    assert np.all(np.linalg.norm(v_rot - v @ rotation.T, axis=1) <= bound)


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
    from _numerics import kkt

    from mlmlearn._distances import euclidean_distances
    from mlmlearn._huber import huber_regression, optimal_scale

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
    D_in = euclidean_distances(F, robust.references_)
    targets = np.hstack([D_c, g])
    B, c, _, _ = huber_regression(D_in, targets, epsilon=1.2)
    # The rebuilt D_c differs from the fit's in the last bits, and each solution stops
    # where its gradient (not its coefficients) is below tol: both are within the
    # distance that their gradient over the objective's curvature allows from the
    # optimum for the rebuilt data (_numerics.kkt, in centred unit-RMS coordinates, the
    # data's difference entering through the gradient), so within the sum of the two.
    coef = np.hstack([robust.coef_c_, robust.coef_g_])
    intercept = np.hstack([robust.intercept_c_, robust.intercept_g_])
    for k in range(targets.shape[1]):
        y = targets[:, k]
        fits = []
        for w, b in ((coef[:, k], intercept[k]), (B[:, k], c[k])):
            sigma = optimal_scale((y - D_in @ w - b)[:, None], 1.2)[0]
            fits.append(kkt(D_in, y, w, b, sigma, 1.2, 1e-4))
        dist = fits[0].dist + fits[1].dist
        rms, mean = fits[0].rms, fits[0].mean
        assert np.all(np.abs(coef[:, k] - B[:, k]) <= dist / rms), k
        assert abs(intercept[k] - c[k]) <= dist * (1 + np.sum(np.abs(mean) / rms)), k
    v = robust.predict(AtomicEnvironments(propane[30:], species="C"))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_verbose_reports_selection_alignments_and_the_huber_solver(propane, capsys):
    import re

    train = AtomicEnvironments(propane[:10], species="C")
    _model(references=12, epsilon=1.2).fit(train, train.forces)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    model = _model(references=12, epsilon=1.2, verbose=1).fit(train, train.forces)
    err = capsys.readouterr().err
    assert "RS-maximin" in err and "OAMLM fit alignments" in err
    # B_c and B_g: 2 × 12 columns, the bar ends at the columns that converged
    assert re.search(r"Huber regression: .*/24 .*Newton iteration", err), err
    assert f"Newton iteration {model.n_iter_}/100" in err


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


def test_structures_without_environments_are_refused_naming_the_wrapper(propane):
    env = AtomicEnvironments(propane[:5], species="C")
    model = _model(references=5).fit(env, env.forces)
    for X in (list(env.structures), env.structures[0]):
        with pytest.raises(TypeError, match="OAMLM takes AtomicEnvironments.*got"):
            model.predict(X)
        with pytest.raises(TypeError, match="OAMLM takes AtomicEnvironments"):
            _model(references=5).fit(X, np.ones((len(env), 3)))


@pytest.mark.parametrize("loss", ["analytic", "sphere"])
def test_predict_paths_agree_to_the_last_bit(propane, loss):
    """Directions are the same with and without the uncertainty (B_g is skipped without
    it), and for a model saved before the references' squared norms were kept."""
    train = AtomicEnvironments(propane[:20], species="C")
    model = _model(references=30, loss=loss).fit(train, train.forces)
    test = AtomicEnvironments(propane[30:36], species="C")
    v, u = model.predict(test, return_uncertainty=True)
    np.testing.assert_array_equal(model.predict(test), v)
    np.testing.assert_array_equal(
        model._reference_sq_norms_, np.einsum("ij,ij->i", model.references_, model.references_)
    )
    del model._reference_sq_norms_  # as unpickled from an earlier version
    v_old, u_old = model.predict(test, return_uncertainty=True)
    np.testing.assert_array_equal(v_old, v)
    np.testing.assert_array_equal(u_old, u)


def test_rotated_reference_directions_are_the_rotations_applied():
    """R t̂ of _predict_products against the matrix products, within their rounding."""
    from mlmlearn.oamlm._oamlm import _predict_products

    rng = np.random.default_rng(5)
    R = Rotation.random(24, random_state=3).as_matrix().reshape(4, 6, 3, 3)
    T = rng.normal(size=(6, 3))

    class Fixed:
        def align(self, P, S):
            return R, np.zeros((4, 6))

    rotated, _ = _predict_products(Fixed(), None, None, T)
    expected = np.array([[R[n, k] @ T[k] for k in range(6)] for n in range(4)])
    # a sum of three products is within γ₃ ≈ 3u Σ_j |R_ij t_j| ≤ 1.5 ε Σ_j |t_j| of the
    # exact value (u = ε/2, |R_ij| ≤ 1), on either side: 3 ε apart at most
    bound = 3 * np.finfo(float).eps * np.abs(T).sum(axis=1)[None, :, None]
    assert np.all(np.abs(rotated - expected) <= bound)


# ------------------------------------------------------------ symmetric environments
def _staggered_ethane():
    """Staggered ethane whose methyls are exactly threefold (to rounding): C–C 1.54 Å,
    C–H 1.09 Å, tetrahedral angles, the H of one methyl at 0°, 120°, 240°, of the other
    at 60°, 180°, 300°."""
    from ase import Atoms

    theta = np.arccos(-1.0 / 3.0)
    positions = [(0.0, 0.0, 0.77), (0.0, 0.0, -0.77)]
    for z, sign, phase in ((0.77, 1.0, 0.0), (-0.77, -1.0, np.pi / 3)):
        for k in range(3):
            phi = phase + 2 * np.pi * k / 3
            positions.append((1.09 * np.sin(theta) * np.cos(phi), 1.09 * np.sin(theta)
                              * np.sin(phi), z - sign * 1.09 * np.cos(theta)))
    return Atoms("C2H6", positions=positions)


def _orders(m):
    import itertools

    return np.array([(0, *(1 + np.array(o))) for o in itertools.permutations(range(m))])


def _n_ties(model, env):
    from mlmlearn.oamlm._superpose import best_alignments

    P = model.alignment_.neighborhoods(env)
    return int((best_alignments(P, model.reference_neighborhoods_, _orders(P.shape[1] - 1),
                                return_ties=True)[4] > 1).sum())


@pytest.fixture(scope="module")
def symmetric_models(propane):
    """OAMLMs (C and H, PermutationAlignment(4)) whose references include exactly
    symmetric molecules: methane (Td) and staggered ethane (threefold methyls), with
    random forces (their directions need not share the symmetry)."""
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    symmetric = []
    for atoms in (molecule("CH4"), _staggered_ethane()):
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(len(atoms), 3)))
        symmetric.append(atoms)
    models = {}
    for species in ("C", "H"):
        train = AtomicEnvironments(propane[:12] + symmetric, species=species)
        with warnings.catch_warnings():  # every environment a reference: a singular system
            warnings.filterwarnings("ignore", "the distance system")
            models[species] = _model(references="all").fit(train, train.forces)
    return models, symmetric


@settings(max_examples=8, deadline=None)
@given(which=st.integers(0, 3), species=st.sampled_from(["C", "H"]),
       loss=st.sampled_from(["analytic", "sphere"]),
       quaternion=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(
           lambda q: np.linalg.norm(q) > 0.1),
       shift=st.lists(st.floats(-20, 20), min_size=3, max_size=3), seed=st.integers(0, 2**31))
def test_symmetric_environments_rotate_with_the_structure(symmetric_models, propane, which,
                                                          species, loss, quaternion, shift,
                                                          seed):
    """Methyls and methane as inputs and as references: the orderings that tie count alike,
    so the directions rotate with the structure and ignore the order of equivalent atoms,
    to 1e-9 and 1e-6 rad (the forces' test's criterion). Not methane's carbon as an input:
    its twelve tied rotations turn every reference direction into their mean, zero to
    rounding, and the normalised rounding is no direction. Nor a symmetric input with the
    sphere loss: a methyl's tied rotations turn every reference direction onto its axis,
    and the unit vectors minimising (2.30) then form a circle about it (the trust-region
    problem's hard case), of which no choice can rotate with the structure."""
    import copy

    models, symmetric = symmetric_models
    if loss == "sphere":
        which = 2 + which % 2  # the MD frames: ties from the symmetric references alone
    if which == 0 and species == "C":
        species = "H"
    model = copy.copy(models[species]).set_params(loss=loss)
    atoms = [*symmetric, propane[30], propane[35]][which].copy()
    atoms.calc = None
    env = AtomicEnvironments(atoms, species=species)
    assert _n_ties(model, env) > 0
    v = model.predict(env)
    rotation = Rotation.from_quat(np.array(quaternion) / np.linalg.norm(quaternion)).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.array(shift)
    order = np.random.default_rng(seed).permutation(len(atoms))
    mine = atoms.numbers == atoms.numbers[env.atom_index[0]]
    # row k of the permuted structure's environments is the atom order[mine[order]][k]
    rows = np.searchsorted(np.flatnonzero(mine), order[mine[order]])
    v_moved = model.predict(AtomicEnvironments(moved, species=species))
    v_perm = np.empty_like(v)
    v_perm[rows] = model.predict(AtomicEnvironments(atoms[order], species=species))
    rows = np.arange(len(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)
    assert np.abs(v_moved - v @ rotation.T).max() <= 1e-9
    assert np.abs(v_perm[rows] - v).max() <= 1e-9
    for got, expected in ((v_moved, v @ rotation.T), (v_perm[rows], v)):
        cos = np.einsum("ij,ij->i", got, expected)
        sin = np.linalg.norm(np.cross(got, expected), axis=1)
        assert np.arctan2(sin, cos).max() <= 1e-6


def test_predictions_without_ties_are_those_before_ties_counted(propane):
    """MD environments and references (no exact symmetry): every alignment's single best
    ordering wins, and the predictions equal, to the last bit, those of an alignment that
    keeps the single best ordering as before ties counted."""
    import copy

    from mlmlearn.oamlm._superpose import best_alignments

    class SingleBest(PermutationAlignment):
        def align(self, P, S):
            orders = _orders(P.shape[1] - 1)
            single = [best_alignments(P, S, orders[o : o + 1]) for o in range(len(orders))]
            g = np.array([s[1] for s in single])
            best = np.argmin(g, axis=0)
            R = np.take_along_axis(np.array([s[0] for s in single]),
                                   best[None, ..., None, None], axis=0)[0]
            return R, np.take_along_axis(g, best[None], axis=0)[0]

    for species in ("C", "H"):
        # not frame 0: its middle carbon has an exact twofold axis (sign flips), a tie
        train = AtomicEnvironments(propane[1:21], species=species)
        model = _model(references=30).fit(train, train.forces)
        test = AtomicEnvironments(propane[30:36], species=species)
        assert _n_ties(model, test) == 0
        before = copy.deepcopy(model)
        before.alignment_ = SingleBest(4)
        np.testing.assert_array_equal(model.predict(test), before.predict(test))
