"""ForceField: per-type EMLM norm × OAMLM direction, net force/torque removal, typing policy."""

import copy
import pickle
import warnings
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("numba")
import joblib  # noqa: E402
from _numerics import U, distance_bound, gamma  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402

from mlmlearn._distances import euclidean_distances  # noqa: E402
from mlmlearn.atoms import AtomicEnvironments  # noqa: E402
from mlmlearn.datasets import gold_thiolate_ring, load_gold_thiolate_rings  # noqa: E402
from mlmlearn.forcefield import (  # noqa: E402
    ForceField,
    ModelVersionWarning,
    UnknownAtomTypeError,
    default_direction_model,
    default_norm_model,
    remove_net_force,
)
from mlmlearn.forcefield._typing import GOLD_THIOLATE_FAMILIES  # noqa: E402
from mlmlearn.oamlm import PermutationAlignment  # noqa: E402

# tiny training sets use all their environments as references; one test checks the warning
pytestmark = pytest.mark.filterwarnings(
    "ignore:the '.*' (norm|direction) model has .* training environments:UserWarning")

#: small SOAP for both parts, so that a force field fits in about a second
SMALL = dict(norm__soap__n_max=3, norm__soap__l_max=2,
             direction__descriptor__soap__n_max=3, direction__descriptor__soap__l_max=2)


def _small_force_field(references=30, *, min_samples=2, **kwargs):
    ff = ForceField(default_norm_model(references=references),
                    default_direction_model(references=references), min_samples=min_samples,
                    **kwargs)
    return ff.set_params(**SMALL)


@pytest.fixture(scope="module")
def rings():
    """Ring frames by role. Training and test frames are MD frames (no frame 0 of a run);
    the symmetric frames 0 ("first") and built rings are tested on their own below."""
    data = load_gold_thiolate_rings()
    frames = data.frames
    env = AtomicEnvironments(frames)
    core = set(env.structure_index[env.gold_thiolate_types() == "Au_core"].tolist())
    plain = [k for k in range(len(frames)) if data.step[k] > 0 and k not in core]
    return {
        "train": [frames[k] for k in plain[5::100]],
        "test": [frames[k] for k in plain[55::300]],
        "core": [frames[k] for k in sorted(core)],
        "first": [frames[k] for k in range(len(frames)) if data.step[k] == 0],
    }


@pytest.fixture(scope="module")
def ff(rings):
    """The module's force field: 30 ring frames without core gold, K = 30, small SOAP."""
    return _small_force_field().fit(AtomicEnvironments(rings["train"]))


def _angles(a, b):
    """Angle (rad) between the rows of ``a`` and ``b`` (atan2: accurate near 0)."""
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), np.einsum("ij,ij->i", a, b))


# ------------------------------------------------------- remove_net_force oracles
def _exact_projection(F, R, *, torque=True):
    """The projection of F ∈ R^{3n} onto the complement of the rigid motions, exactly.

    Brute force in rational arithmetic (floats are rationals): the six rigid-motion
    vectors (three translations; rotations e_k × (R_i − R̄) about the centroid) are
    orthogonalised by Gram–Schmidt (exactly dependent or zero ones dropped, as for a
    linear molecule) and their components subtracted from F.
    """
    n = len(F)
    f = [Fraction(float(x)) for x in np.asarray(F, dtype=float).ravel()]
    basis = []
    for k in range(3):
        basis.append([Fraction(int(c == k)) for _ in range(n) for c in range(3)])
    if torque:
        pos = [[Fraction(float(x)) for x in row] for row in np.asarray(R, dtype=float)]
        centre = [sum(p[c] for p in pos) / n for c in range(3)]
        r = [[p[c] - centre[c] for c in range(3)] for p in pos]
        for k in range(3):
            e = [Fraction(int(c == k)) for c in range(3)]
            basis.append([x for ri in r for x in (e[1] * ri[2] - e[2] * ri[1],
                                                  e[2] * ri[0] - e[0] * ri[2],
                                                  e[0] * ri[1] - e[1] * ri[0])])
    orthogonal = []
    for b in basis:
        for q in orthogonal:
            c = sum(x * y for x, y in zip(b, q, strict=True)) / sum(y * y for y in q)
            b = [x - c * y for x, y in zip(b, q, strict=True)]
        if any(b):
            orthogonal.append(b)
    for q in orthogonal:
        c = sum(x * y for x, y in zip(f, q, strict=True)) / sum(y * y for y in q)
        f = [x - c * y for x, y in zip(f, q, strict=True)]
    return np.array([float(x) for x in f]).reshape(n, 3)


def _projection_bound(F, R=None, rcond=1e-10):
    """Bound on ‖remove_net_force(F, R) − P F‖_F (P the exact projection), first order.

    Rounding model fl(a ∘ b) = (a ∘ b)(1 + δ), |δ| ≤ u; n-term sums γ_n:

    * centring: the mean errs by γ_{n+1}·mean|x| per component, the difference by u
      more, so each centred vector errs by ε = √3 (γ_{n+1} mean|x| + u max|x − x̄|);
    * torque τ = Σ r_i × f_i: the data errors Σ(|r_i| ε_F + ε_r |f_i|), each cross
      product's rounding 2γ_2 |r_i||f_i| and the n-term sum γ_n of the same;
    * inertia I = Σ|r|² 1 − rᵀr: per entry (γ_{3n} + γ_n + 2u) Σ|r_i|² + 4 Σ|r_i| ε_r,
      ‖δI‖₂ ≤ 3× that; LAPACK's symmetric eigensolver (pinv) is backward stable to
      γ₂₇‖I‖ (LAPACK Users' Guide §4.7, p(3) = 27), taken twice for rebuilding I⁺ and
      applying it; so |δω| ≤ ‖I⁺‖(|δτ| + (‖δI‖ + 2γ₂₇‖I‖)|ω|) / (1 − ‖I⁺‖‖δI‖), ‖I⁺‖ the
      inverse of the smallest eigenvalue that pinv keeps;
    * ω × r_i: |δω||r_i| + |ω| ε_r + 2γ_2 |ω||r_i|; the last subtraction u |G_i|.
    """
    F = np.asarray(F, dtype=float)
    n = len(F)
    if n == 0:
        return 0.0

    def centred(x):
        c = x - x.mean(axis=0)
        mean_abs = np.abs(x).mean(axis=0).max()
        return c, np.sqrt(3) * (gamma(n + 1) * mean_abs + U * np.abs(c).max())

    f, eps_f = centred(F)
    if R is None or n < 2:
        G = f
        return float(np.sqrt(np.sum((eps_f + U * np.linalg.norm(G, axis=1)) ** 2)))
    r, eps_r = centred(np.asarray(R, dtype=float))
    nr, nf = np.linalg.norm(r, axis=1), np.linalg.norm(f, axis=1)
    I = np.eye(3) * np.sum(r * r) - r.T @ r
    lam = np.linalg.eigvalsh(I)
    kept = lam[lam > rcond * lam[-1]] if lam[-1] > 0 else lam[:0]
    if kept.size == 0:
        return float(np.sqrt(np.sum((eps_f + U * nf) ** 2)))
    inv = 1.0 / kept[0]
    tau = np.cross(r, f).sum(axis=0)
    omega = np.linalg.pinv(I, rcond=rcond, hermitian=True) @ tau
    d_tau = np.sum(nr * eps_f + eps_r * nf) + (gamma(n) + 2 * gamma(2)) * np.sum(nr * nf)
    d_I = 3 * ((gamma(3 * n) + gamma(n) + 2 * U) * np.sum(nr**2) + 4 * np.sum(nr) * eps_r)
    denominator = 1 - inv * (d_I + 2 * gamma(27) * lam[-1])
    assert denominator > 0.5, "inertia too ill-conditioned for a first-order bound"
    d_omega = inv * (d_tau + (d_I + 2 * gamma(27) * lam[-1]) * np.linalg.norm(omega)) / denominator
    G = f - np.cross(omega, r)
    per_atom = (eps_f + d_omega * nr + np.linalg.norm(omega) * eps_r
                + 2 * gamma(2) * np.linalg.norm(omega) * nr + U * np.linalg.norm(G, axis=1))
    return float(np.sqrt(np.sum(per_atom**2)))


def _well_conditioned(R, ratio=1e-6):
    """The inertia's smallest eigenvalue is at least ``ratio`` of its largest."""
    r = R - R.mean(axis=0)
    lam = np.linalg.eigvalsh(np.eye(3) * np.sum(r * r) - r.T @ r)
    return lam[-1] > 0 and lam[0] >= ratio * lam[-1]


_coordinates = st.floats(-20, 20, allow_nan=False, allow_subnormal=False)


@st.composite
def _structures(draw, min_atoms=3, max_atoms=8):
    n = draw(st.integers(min_atoms, max_atoms))
    F = draw(hnp.arrays(float, (n, 3), elements=st.floats(-5, 5, allow_subnormal=False)))
    R = draw(hnp.arrays(float, (n, 3), elements=_coordinates))
    shift = draw(hnp.arrays(float, 3, elements=st.floats(-100, 100, allow_subnormal=False)))
    return F, R + shift


@settings(max_examples=40, deadline=None)
@given(_structures())
def test_remove_net_force_is_the_projection_off_the_rigid_motions(data):
    F, R = data
    assume(_well_conditioned(R))  # near-linear structures: the pinv path, tested below
    G = remove_net_force(F, R)
    exact = _exact_projection(F, R)
    bound = _projection_bound(F, R)
    assert np.linalg.norm(G - exact) <= bound
    # closed forms: zero net force and zero net torque about the centroid (the exact
    # projection has both zero; ‖Σ e_i‖ ≤ √n ‖e‖_F, plus the test's own sums)
    n = len(F)
    r = R - R.mean(axis=0)
    net = G.sum(axis=0)
    assert np.linalg.norm(net) <= np.sqrt(n) * bound + gamma(n) * np.abs(G).sum()
    torque = np.cross(r, G).sum(axis=0)
    nr = np.linalg.norm(r, axis=1)
    eps_r = np.sqrt(3) * (gamma(n + 1) * np.abs(R).mean(axis=0).max() + U * np.abs(r).max())
    assert np.linalg.norm(torque) <= (np.linalg.norm(nr) * bound + eps_r * np.abs(G).sum()
                                      + (gamma(n) + 2 * gamma(2)) * nr @ np.linalg.norm(G, axis=1))
    # idempotent: ‖P Ĝ − Ĝ‖ = ‖(P − 1)(Ĝ − P F)‖ ≤ β(F), and P Ĝ is computed to β(Ĝ)
    assert np.linalg.norm(remove_net_force(G, R) - G) <= bound + _projection_bound(G, R)
    # net force only: the mean removed, nothing else
    assert np.linalg.norm(remove_net_force(F) - _exact_projection(F, R, torque=False)) \
        <= _projection_bound(F)


@settings(max_examples=20, deadline=None)
@given(_structures())
def test_forces_without_net_force_and_torque_are_left_unchanged(data):
    F, R = data
    assume(_well_conditioned(R))
    clean = _exact_projection(F, R)  # rounded from exact: ‖P F − F‖ ≤ u‖F‖_F
    G = remove_net_force(clean, R)
    assert np.linalg.norm(G - clean) <= _projection_bound(clean, R) + U * np.linalg.norm(clean)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), hnp.arrays(float, (6, 3), elements=st.floats(-5, 5)),
       st.integers(0, 2**32 - 1))
def test_linear_molecules_keep_their_axial_part_pinv_path(n, forces, seed):
    """On a line there is no rotation about the axis: pinv drops that eigenvalue."""
    F = forces[:n]
    t = np.arange(n, dtype=float) * 1.5 - 2.0
    on_axis = np.column_stack([t, np.zeros(n), np.zeros(n)])  # I = diag(0, s, s) exactly
    G = remove_net_force(F, on_axis)
    exact = _exact_projection(F, on_axis)  # the zero rotation vector is dropped
    assert np.linalg.norm(G - exact) <= _projection_bound(F, on_axis)
    assert np.all(np.isfinite(G))
    # the same line along a random direction: the inertia's zero eigenvalue is only
    # rounding-small now, and pinv must still drop it; equivariance gives the oracle
    rotation = Rotation.random(random_state=seed).as_matrix()
    line = on_axis @ rotation.T
    moved = remove_net_force(F @ rotation.T, line)
    # the rotated data err by γ_3 per component; P is non-expansive
    data_error = np.sqrt(3) * gamma(3) * (np.linalg.norm(F) + np.linalg.norm(exact))
    assert np.linalg.norm(moved - exact @ rotation.T) <= (
        _projection_bound(F @ rotation.T, line) + data_error
        + 2 * np.sqrt(3) * gamma(3) * np.linalg.norm(exact))


def test_remove_net_force_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"forces must have shape \(n_atoms, 3\); got \(4,\)"):
        remove_net_force(np.zeros(4))
    with pytest.raises(ValueError, match="positions has 2 rows, forces 3"):
        remove_net_force(np.zeros((3, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="positions has 2 rows, forces 1"):
        remove_net_force(np.zeros((1, 3)), np.zeros((2, 3)))  # checked for one atom too
    with pytest.raises(ValueError, match="forces must be finite; row 1"):
        remove_net_force([[0, 0, 0], [np.nan, 0, 0]])
    np.testing.assert_array_equal(remove_net_force([[1.0, 2.0, 3.0]], [[0.0, 0, 0]]),
                                  np.zeros((1, 3)))


# ----------------------------------------------------------- the assembled model
def _labels(env):
    """Paper IV's model families of the environments (half-unit gold with unit gold)."""
    return np.array([GOLD_THIOLATE_FAMILIES[t] for t in env.gold_thiolate_types()])


def _norm_gap(model, env1, env2):
    """Bound on |ν₁ − ν₂| of an SOAP → scaler → EMLM pipeline on the same environments
    computed in two calls: the features' measured difference and the distance kernel's
    bound (:func:`_numerics.distance_bound`) on each side give δD, and the K-term
    products d·W + c are rounded by γ_{K+1} each."""
    emlm = model[-1]
    X1, X2 = model[:-1].transform(env1), model[:-1].transform(env2)
    Q, W = emlm.references_, emlm.coef_[:, 0]
    D1 = euclidean_distances(X1, Q, Y_norm_squared=emlm._references_sq)
    D2 = euclidean_distances(X2, Q, Y_norm_squared=emlm._references_sq)
    dD = (np.linalg.norm(X1 - X2, axis=1)[:, None] + distance_bound(X1, Q, D1)
          + distance_bound(X2, Q, D2))
    K = len(Q)
    return dD @ np.abs(W) + 2 * gamma(K + 1) * (np.maximum(D1, D2) @ np.abs(W)
                                                 + abs(emlm.intercept_[0]))


def _direction_gap(model, env1, env2):
    """Bound on |v̂₁ − v̂₂| of an analytic-loss OAMLM on the same environments in two calls.

    The alignments are pairwise and recomputed identically (asserted); the predicted
    dot products d_c = D_in B_c + c differ by δD|B_c| + 2γ_{K+1}(|D||B_c| + |c|); the
    weighted mean u = Σ ω d_c r / Σ ω (|r| = 1) then by Σ ω δd_c / Σ ω plus its own
    rounding 2γ_{K+3} Σ ω |d_c| / Σ ω, and the normalised v̂ = u/|u| by 2|δu|/|u| plus
    the normalisation's rounding on each side (2γ_5).
    """
    assert model.loss == "analytic"
    F1, F2 = model._features(env1), model._features(env2)
    Q = model.references_
    D1, D2 = euclidean_distances(F1, Q), euclidean_distances(F2, Q)
    dD = (np.linalg.norm(F1 - F2, axis=1)[:, None] + distance_bound(F1, Q, D1)
          + distance_bound(F2, Q, D2))
    S, T = model.reference_neighborhoods_, model.reference_directions_
    R1, g1 = model.alignment_.align(model.alignment_.neighborhoods(env1), S)
    R2, g2 = model.alignment_.align(model.alignment_.neighborhoods(env2), S)
    np.testing.assert_array_equal(R1, R2)
    np.testing.assert_array_equal(g1, g2)
    K = len(Q)
    d_c = D1 @ model.coef_c_ + model.intercept_c_
    dd_c = dD @ np.abs(model.coef_c_) + 2 * gamma(K + 1) * (
        np.maximum(D1, D2) @ np.abs(model.coef_c_) + np.abs(model.intercept_c_))
    x = (g1 / model.sigma2) ** 2
    omega = np.exp(-(x - x.min(axis=1, keepdims=True)))
    total = omega.sum(axis=1)
    u = np.einsum("nk,nk,nki->ni", omega, d_c, np.einsum("nkij,kj->nki", R1, T)) / total[:, None]
    du = ((omega * dd_c).sum(axis=1) + 2 * gamma(K + 3) * (omega * np.abs(d_c)).sum(axis=1)) / total
    return 2 * du / np.linalg.norm(u, axis=1) + 2 * gamma(5)


def _force_gap(norm, direction, nu, env1, env2):
    """Bound on |ν̂₁v̂₁ − ν̂₂v̂₂| per row, the same environments predicted in two calls:
    |δν| + ν|δv̂| and the products' rounding (2√3 u ν). Clipping ν is 1-Lipschitz."""
    return (_norm_gap(norm, env1, env2) + nu * _direction_gap(direction, env1, env2)
            + 2 * np.sqrt(3) * U * nu)


def test_force_field_equals_its_parts_assembled_by_hand(ff, rings):
    train = AtomicEnvironments(rings["train"])
    labels = _labels(train)
    forces = train.forces
    hand = {}
    for t in ff.types_:
        rows = np.flatnonzero(labels == t)
        norms = np.linalg.norm(forces[rows], axis=1)
        assert ff.max_norm_[t] == norms.max()  # the upper clip of the norms
        norm = clone(ff.norm).fit(train[rows], norms)
        direction = clone(ff.direction).fit(train[rows], forces[rows])
        # the same data give the same models
        np.testing.assert_array_equal(norm[-1].coef_, ff.norm_models_[t][-1].coef_)
        np.testing.assert_array_equal(direction.coef_c_, ff.direction_models_[t].coef_c_)
        hand[t] = norm, direction
    assert sorted(hand) == ff.types_ == ["Au_unit", "C", "H", "S"]

    joint = AtomicEnvironments(rings["test"])
    predicted = ff.predict(joint)
    joint_labels = _labels(joint)
    for s, structure in enumerate(rings["test"]):
        # by hand, one structure at a time: every type's norm × direction, in atom order,
        # then the net force and torque removed
        env = AtomicEnvironments(structure)
        mine = _labels(env)
        F = np.full((len(env), 3), np.nan)
        gap = np.zeros(len(env))
        in_joint = np.flatnonzero(joint.structure_index == s)
        for t, (norm, direction) in hand.items():
            rows = np.flatnonzero(mine == t)
            nu = np.clip(norm.predict(env[rows]), 0.0, ff.max_norm_[t])  # clipping: 1-Lipschitz
            v = direction.predict(env[rows])
            F[rows] = nu[:, None] * v
            other = joint[in_joint[joint_labels[in_joint] == t]]
            gap[rows] = _force_gap(norm, direction, nu, env[rows], other)
        assert np.all(np.isfinite(F)), "every atom has a modelled type"
        G = remove_net_force(F, structure.positions)
        # P is non-expansive; each side's projection is computed to its own bound
        bound = (np.linalg.norm(gap) + _projection_bound(F, structure.positions)
                 + _projection_bound(predicted[in_joint], structure.positions))
        assert np.linalg.norm(predicted[in_joint] - G) <= bound, s
    # the raw per-atom products, before the projection, are the models' outputs
    raw = copy.deepcopy(ff).set_params(remove_net_force=None)  # acts at predict only
    F_raw = raw.predict(joint)
    for t, (norm, direction) in hand.items():
        rows = np.flatnonzero(joint_labels == t)
        nu = np.clip(norm.predict(joint[rows]), 0, ff.max_norm_[t])
        expected = nu[:, None] * direction.predict(joint[rows])
        np.testing.assert_array_equal(F_raw[rows], expected)
    # the projection removed a real net force and torque (else the test above is void)
    assert np.abs(F_raw.sum(axis=0)).max() > 1e-3


# ----------------------------------------------------------------- symmetries
@settings(max_examples=6, deadline=None)
@given(st.integers(0, 9), hnp.arrays(float, 4, elements=st.floats(-1, 1)).filter(
    lambda q: np.linalg.norm(q) > 0.1), hnp.arrays(float, 3, elements=st.floats(-50, 50)),
    st.integers(0, 2**32 - 1))
def test_forces_rotate_with_the_structure_and_ignore_translation_and_atom_order(
        ff, rings, which, quaternion, shift, seed):
    """|F(Rx + t) − R F(x)| ≤ 1e-9 max|F| for every atom: rounding (~1e-15 relative) and
    QCP's Newton tolerance (1e-12 of the eigenvalue, i.e. ~1e-12 rad per alignment of
    well-separated orderings, times a weighted sum of K = 30) fit in that with a
    factor of 1000 to spare. Hence the angle is ≤ 1e-6 rad wherever |F| ≥ 1e-3 max|F|
    (the issue's requirement), since the angle of a vector off by ε is ≤ ε/|F|."""
    atoms = rings["test"][which].copy()
    atoms.calc = None
    rotation = Rotation.from_quat(quaternion / np.linalg.norm(quaternion)).as_matrix()
    F = ff.predict(atoms)
    scale = np.linalg.norm(F, axis=1).max()
    big = np.linalg.norm(F, axis=1) >= 1e-3 * scale
    assert big.mean() > 0.9

    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + shift
    expected = F @ rotation.T
    got = ff.predict(moved)
    assert np.linalg.norm(got - expected, axis=1).max() <= 1e-9 * scale
    assert _angles(got[big], expected[big]).max() <= 1e-6

    translated = atoms.copy()
    translated.positions += shift
    assert np.linalg.norm(ff.predict(translated) - F, axis=1).max() <= 1e-9 * scale

    order = np.random.default_rng(seed).permutation(len(atoms))
    permuted = ff.predict(atoms[order])
    assert np.linalg.norm(permuted - F[order], axis=1).max() <= 1e-9 * scale
    assert _angles(permuted[big[order]], F[order][big[order]]).max() <= 1e-6


def _moves_with_the_structure(ff, atoms, rotation, shift, order):
    """Forces and each type's OAMLM directions of ``atoms`` against those of the structure
    rotated (and translated), and of the atoms in another ``order``.

    The same criterion as the MD frames' test above: |F' − R F| ≤ 1e-9 max|F| and ≤ 1e-6
    rad wherever |F| ≥ 1e-3 max|F|; the unit directions of every type's OAMLM to
    1e-9, and to 1e-6 rad.
    """
    atoms = atoms.copy()
    atoms.calc = None
    F = ff.predict(atoms)
    scale = np.linalg.norm(F, axis=1).max()
    big = np.linalg.norm(F, axis=1) >= 1e-3 * scale
    assert big.mean() > 0.9
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + shift
    for other, expected in [(moved, F @ rotation.T), (atoms[order], F[order])]:
        got = ff.predict(other)
        assert np.linalg.norm(got - expected, axis=1).max() <= 1e-9 * scale
        keep = big if other is moved else big[order]
        assert _angles(got[keep], expected[keep]).max() <= 1e-6
    env, labels = AtomicEnvironments(atoms), None
    labels = ff._labels(env)
    env_moved = AtomicEnvironments(moved)
    for t, model in ff.direction_models_.items():
        rows = np.flatnonzero(labels == t)
        if rows.size == 0:
            continue
        v, v_moved = model.predict(env[rows]), model.predict(env_moved[rows])
        assert np.linalg.norm(v_moved - v @ rotation.T, axis=1).max() <= 1e-9, t
        assert _angles(v_moved, v @ rotation.T).max() <= 1e-6, t


def _ties(model, env):
    """How many (environment, reference) pairs of an OAMLM average tied orderings."""
    from mlmlearn.oamlm._gold_thiolate import _ORDERS
    from mlmlearn.oamlm._superpose import best_alignments

    P, S = model.alignment_.neighborhoods(env), model.reference_neighborhoods_
    n = 0
    for kind in np.intersect1d(np.unique(P.kind), list(_ORDERS)):
        p, s = P[P.kind == kind], S[S.kind == kind]
        m = int(P.count[P.kind == kind][0])
        n += int((best_alignments(p.points[:, :m], s.points[:, :m], _ORDERS[kind],
                                  return_ties=True)[4] > 1).sum())
    return n


@settings(max_examples=6, deadline=None)
@given(st.integers(4, 6), hnp.arrays(float, 4, elements=st.floats(-1, 1)).filter(
    lambda q: np.linalg.norm(q) > 0.1), hnp.arrays(float, 3, elements=st.floats(-50, 50)),
    st.integers(0, 2**32 - 1))
def test_symmetric_built_rings_rotate_too(ff, n_gold, quaternion, shift, seed):
    """The built rings are symmetric: orderings of a methyl's H, of a sulfur's two Au and
    of a unit gold's two blocks fit exactly alike. They count alike (the mean of their
    rotations), so the rotated ring gets the rotated forces whichever ordering rounding
    favours — before, up to 1.2 rad apart for the carbons of the Au5 ring."""
    ring = gold_thiolate_ring(n_gold)
    assert _ties(ff.direction_models_["C"], AtomicEnvironments(ring, species="C")) > 0
    rotation = Rotation.from_quat(quaternion / np.linalg.norm(quaternion)).as_matrix()
    order = np.random.default_rng(seed).permutation(len(ring))
    _moves_with_the_structure(ff, ring, rotation, shift, order)


@pytest.fixture(scope="module")
def ff_symmetric(rings):
    """A force field whose references include symmetric environments: the built rings
    Au4–Au8 with the GFN2-xTB forces of the bundled runs' frames 0 (those frames are the
    built rings stored to ~5e-9 Å, which splits their ties by ~3e-9 Å in g: near-ties,
    far above the tie tolerance, that pick one ordering in every orientation)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    built = []
    for first in rings["first"][::3]:
        ring = gold_thiolate_ring(int((first.numbers == 79).sum()))
        assert np.abs(ring.positions - first.positions).max() < 1e-8
        ring.calc = SinglePointCalculator(ring, forces=first.get_forces())
        built.append(ring)
    with warnings.catch_warnings():  # every environment a reference: a singular system
        warnings.filterwarnings("ignore", "the distance system")
        return _small_force_field(references="all").fit(
            AtomicEnvironments(rings["train"][::3] + built))


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 9), hnp.arrays(float, 4, elements=st.floats(-1, 1)).filter(
    lambda q: np.linalg.norm(q) > 0.1), hnp.arrays(float, 3, elements=st.floats(-50, 50)),
    st.integers(0, 2**32 - 1))
def test_symmetric_references_keep_md_forces_rotating(ff_symmetric, rings, which, quaternion,
                                                      shift, seed):
    """Symmetric references tie for every input, MD frames too (before: up to 0.02 rad)."""
    atoms = rings["test"][which]
    model = ff_symmetric.direction_models_["C"]
    assert _ties(model, AtomicEnvironments(atoms, species="C")) > 0
    rotation = Rotation.from_quat(quaternion / np.linalg.norm(quaternion)).as_matrix()
    order = np.random.default_rng(seed).permutation(len(atoms))
    _moves_with_the_structure(ff_symmetric, atoms, rotation, shift, order)


def test_equivalent_atoms_in_another_order_change_nothing(ff):
    """A methyl's three H (and the ring's thiolates) listed in another order: the forces
    are those of the same atoms, to the test above's tolerance."""
    ring = gold_thiolate_ring(5)
    F = ff.predict(ring)
    n = 5
    order = np.arange(len(ring))
    rng = np.random.default_rng(0)
    for k in range(n):  # Au…, then S, C, H, H, H per thiolate
        h = n + 5 * k + 2 + np.arange(3)
        order[h] = rng.permutation(h)
    got = ff.predict(ring[order])
    scale = np.linalg.norm(F, axis=1).max()
    assert np.linalg.norm(got - F[order], axis=1).max() <= 1e-9 * scale


# -------------------------------------------------------- per-type settings
def test_type_settings_reach_the_fitted_model_and_survive_clone(rings):
    ff = _small_force_field(references=10).set_params(Au_unit__direction__sigma2=0.25)
    assert ff.type_params == {"Au_unit": {"direction__sigma2": 0.25}}
    twin = clone(ff)
    assert twin.type_params == ff.type_params and twin.type_params is not ff.type_params
    # a type_params given in the same call is the base the typed keys add to
    both = clone(ff).set_params(type_params={"S": {"norm__emlm__beta": 1e-6}},
                                Au_unit__direction__sigma2=0.3)
    assert both.type_params == {"S": {"norm__emlm__beta": 1e-6},
                                "Au_unit": {"direction__sigma2": 0.3}}
    twin.fit(AtomicEnvironments(rings["train"][:4]))
    assert twin.direction_models_["Au_unit"].sigma2 == 0.25
    assert {t: m.sigma2 for t, m in twin.direction_models_.items() if t != "Au_unit"} == {
        "C": 0.5, "H": 0.5, "S": 0.5}
    assert ff.direction.sigma2 == 0.5  # the template is untouched
    # the default direction model carries paper IV's σ₂ per type; type_params override it
    default = ForceField(type_params={"H": {"direction__sigma2": 0.4}})
    assert default._type_params() == {"Au_unit": {"direction__sigma2": 0.25},
                                      "H": {"direction__sigma2": 0.4}}


@pytest.mark.parametrize("key, match", [
    ("Au_unit__foo__x", "'<type>__norm__<param>'"),
    ("Au_unit__direction__nonsense", "OAMLM has no parameter 'nonsense'"),
    ("Au_unit__norm__emlm__nonsense", "Pipeline has no parameter 'emlm__nonsense'"),
    ("nonsense", "Invalid parameter 'nonsense'"),
])
def test_bad_type_settings_raise_naming_the_key(key, match):
    ff = _small_force_field()
    with pytest.raises(ValueError, match=match):
        ff.set_params(**{key: 1})
    # given directly they are refused at fit, before any model is fitted
    part = key.split("__", 1)[-1]
    if "__" in key:
        with pytest.raises(ValueError, match=match.replace("Invalid parameter", "")):
            _small_force_field(type_params={"Au_unit": {part: 1}}).fit(
                AtomicEnvironments(gold_thiolate_ring(4)), np.ones((24, 3)))


def test_type_settings_for_a_type_without_data_raise(rings):
    ff = _small_force_field(type_params={"Au_core": {"direction__sigma2": 0.25}})
    with pytest.raises(UnknownAtomTypeError, match=r"type_params names atom type 'Au_core'"
                                                   r".*models to \['Au_unit', 'C', 'H', 'S'\]"):
        ff.fit(AtomicEnvironments(rings["train"][:3]))


def test_grid_search_over_one_types_setting(rings):
    frames = rings["train"][:6]
    env = AtomicEnvironments(frames)
    search = GridSearchCV(_small_force_field(references=10),
                          {"Au_unit__direction__sigma2": [0.25, 1.0]},
                          cv=GroupKFold(n_splits=2), refit=False, error_score="raise")
    search.fit(env, env.forces, groups=env.groups)
    assert [p["Au_unit__direction__sigma2"] for p in search.cv_results_["params"]] == [0.25, 1.0]
    # the score is the default one, −force RMSE, on whole structures (GroupKFold)
    train, test = next(GroupKFold(n_splits=2).split(env, groups=env.groups))
    model = _small_force_field(references=10).set_params(Au_unit__direction__sigma2=1.0)
    model.fit(env[train], env.forces[train])
    rmse = np.sqrt(np.mean(np.sum((model.predict(env[test]) - env.forces[test]) ** 2, axis=1)))
    assert search.cv_results_["split0_test_score"][1] == -rmse  # the same operations
    assert search.cv_results_["split0_test_score"][0] != search.cv_results_["split0_test_score"][1]


# ------------------------------------------------------------ typing policy
def test_an_atom_of_a_type_without_model_raises_naming_it(ff, rings):
    frame = rings["core"][0]
    core = np.flatnonzero(_labels(AtomicEnvironments(frame)) == "Au_core")
    assert core.size == 1
    with pytest.raises(UnknownAtomTypeError,
                       match=rf"^atom {core[0]} of structure 2 \(Au\) is of atom type 'Au_core', "
                             r"which has no model: this force field models \['Au_unit', 'C', "
                             r"'H', 'S'\]"):
        ff.predict(rings["test"][:2] + [frame])


def _split_hydrogen(atoms):
    """Element typing, with hydrogens farther than 1.25 Å from every carbon as 'H_far'."""
    labels = np.array(atoms.get_chemical_symbols(), dtype=object)
    carbons = np.flatnonzero(labels == "C")
    for h in np.flatnonzero(labels == "H"):
        if atoms.get_distances(h, carbons).min() > 1.25:
            labels[h] = "H_far"
    return labels


@pytest.fixture(scope="module")
def element_ff(rings):
    """Element-typed (with the 'H_far' split); PermutationAlignment can align any atom."""
    direction = default_direction_model(references=20).set_params(
        alignment=PermutationAlignment(3))
    ff = ForceField(default_norm_model(references=20), direction, typing=_split_hydrogen,
                    min_samples=2)
    return ff.set_params(**SMALL).fit(AtomicEnvironments(rings["train"][:4]))


def _stretched_hydrogen(frame):
    """The frame with its first H pulled to 1.40 Å from its carbon; (atoms, H index)."""
    atoms = frame.copy()
    atoms.calc = None
    h = int(np.flatnonzero(atoms.numbers == 1)[0])
    carbons = np.flatnonzero(atoms.numbers == 6)
    c = carbons[atoms.get_distances(h, carbons).argmin()]
    bond = atoms.positions[h] - atoms.positions[c]
    atoms.positions[h] = atoms.positions[c] + 1.40 * bond / np.linalg.norm(bond)
    return atoms, h


def test_fallback_predicts_with_the_parent_model_and_warns(element_ff, rings):
    assert element_ff.types_ == ["Au", "C", "H", "S"]
    atoms, h = _stretched_hydrogen(rings["test"][0])
    assert _split_hydrogen(atoms)[h] == "H_far"
    with pytest.raises(UnknownAtomTypeError,
                       match=rf"^atom {h} of structure 0 \(H\) is of atom type 'H_far'"):
        element_ff.predict(atoms)
    fallback = copy.deepcopy(element_ff).set_params(fallback={"H_far": "H"},
                                                     remove_net_force=None)
    with pytest.warns(UserWarning, match=rf"atom {h} of structure 0 of atom type 'H_far' "
                                         r"\(no model\) are predicted by the 'H' models"):
        F = fallback.predict(atoms)
    # the parent's models see the H_far atom among the H atoms, as predict hands them over
    env = AtomicEnvironments(atoms)
    rows = np.flatnonzero(env.symbols == "H")
    nu = np.clip(element_ff.norm_models_["H"].predict(env[rows]), 0, element_ff.max_norm_["H"])
    expected = nu[:, None] * element_ff.direction_models_["H"].predict(env[rows])
    np.testing.assert_array_equal(F[rows], expected)
    assert np.linalg.norm(F[h]) > 0  # never a silent zero force


def test_an_unknown_element_raises_naming_the_atom(element_ff, ff, rings):
    atoms = rings["test"][0].copy()
    atoms.calc = None
    o = int(np.flatnonzero(atoms.numbers == 1)[3])
    atoms[o].symbol = "O"
    with pytest.raises(UnknownAtomTypeError, match=rf"^atom {o} of structure 0 \(O\) is of "
                                                   r"atom type 'O', which has no model"):
        element_ff.predict(atoms)
    from mlmlearn.atoms import AtomTypingError  # gold-thiolate typing knows Au, S, C, H

    with pytest.raises(AtomTypingError, match=rf"structure 0: atom {o} is O"):
        ff.predict(atoms)


def test_fallbacks_are_checked_at_fit(rings):
    env = AtomicEnvironments(rings["train"][:2])
    with pytest.raises(UnknownAtomTypeError, match=r"fallback \{'Au_core': 'H2'\}: 'H2' has "
                                                   "no model"):
        _small_force_field(fallback={"Au_core": "H2"}).fit(env)
    with pytest.raises(UnknownAtomTypeError, match="'Au_half_unit', which typing="
                                                   "'gold_thiolate' never assigns"):
        _small_force_field(fallback={"Au_half_unit": "Au_unit"}).fit(env)
    with pytest.raises(ValueError, match="GoldThiolateAlignment, which aligns 'Au_unit' atoms "
                                         "only and would refuse every 'Au_core' atom"):
        _small_force_field(fallback={"Au_core": "Au_unit"}).fit(env)


def test_few_samples_cap_the_references_and_min_samples_drops_types(rings):
    au4 = rings["train"][0]
    assert len(au4) == 24  # Au4(SCH3)4: 4 unit gold, 4 S, 4 C, 12 H
    env = AtomicEnvironments(au4)
    with pytest.warns(UserWarning) as record:
        ff = _small_force_field(references=30).fit(env)
    messages = {str(w.message) for w in record}
    for t, n in (("Au_unit", 4), ("S", 4), ("C", 4), ("H", 12)):
        for part in ("norm", "direction"):
            assert (f"the {t!r} {part} model has {n} training environments, fewer than the "
                    "30 references asked for: all of them are references") in messages
        assert ff.norm_models_[t][-1].n_references_ == n
        assert ff.direction_models_[t].n_references_ == n
    with pytest.warns(UserWarning) as record:
        few = _small_force_field(references=5, min_samples=5).fit(env)
    assert sorted(str(w.message) for w in record) == [
        f"atom type {t!r} has 4 training environment(s), fewer than min_samples=5; it gets "
        "no model" for t in ("Au_unit", "C", "S")]
    assert few.types_ == ["H"] and few.n_samples_ == {"Au_unit": 4, "C": 4, "H": 12, "S": 4}
    with pytest.raises(UnknownAtomTypeError, match=r"^atom 0 of structure 0, atom 1 of "
                       r"structure 0, atom 2 of structure 0 and 1 more \(Au\) is of atom type "
                       r"'Au_unit', which has no model: this force field models \['H'\]"):
        few.predict(au4)
    with pytest.raises(InvalidParameterError, match="min_samples"):
        _small_force_field(min_samples=0).fit(env)


def test_refit_types_under_the_new_alignment_cutoffs(rings):
    env = AtomicEnvironments(rings["train"][:2])
    ff = _small_force_field(references=10).fit(env)
    assert "Au_core" not in ff.types_
    # a 2.0 Å bond cutoff sees no Au–S bond: every gold becomes core gold
    ff.set_params(direction__alignment__bond_cutoff=2.0).fit(env)
    fresh = clone(ff).fit(env)
    assert ff.n_samples_ == fresh.n_samples_ and "Au_core" in ff.types_
    assert ff._fitted_cutoffs == (2.0, 5.0)


def test_zero_forces_are_refused_naming_the_atom(rings):
    env = AtomicEnvironments(rings["train"][:2])
    y = env.forces.copy()
    y[30] = 0.0
    with pytest.raises(ValueError, match=rf"y row 30 \(atom {env.atom_index[30]} of structure "
                                         rf"{env.structure_index[30]}\) is a zero force"):
        _small_force_field().fit(env, y)


# ---------------------------------------------------------------- persistence
def test_pickle_and_joblib_round_trips_predict_identically(ff, rings, tmp_path):
    F = ff.predict(rings["test"][:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same versions: no warning
        loaded = pickle.loads(pickle.dumps(ff))
        joblib.dump(ff, tmp_path / "ff.joblib")
        dumped = joblib.load(tmp_path / "ff.joblib")
    np.testing.assert_array_equal(loaded.predict(rings["test"][:3]), F)
    np.testing.assert_array_equal(dumped.predict(rings["test"][:3]), F)
    assert "_mlmlearn_version" not in vars(ff)  # pickling leaves the live model alone


def test_a_model_from_another_mlmlearn_version_warns(ff):
    from mlmlearn import __version__

    state = ff.__getstate__()
    assert state["_mlmlearn_version"] == __version__
    state["_mlmlearn_version"] = "0.0.1"
    other = ForceField.__new__(ForceField)
    with pytest.warns(ModelVersionWarning,
                      match=rf"saved by mlmlearn 0.0.1 and is loaded by mlmlearn {__version__}"):
        other.__setstate__(state)
    assert "_mlmlearn_version" not in vars(other) and other.types_ == ff.types_
    state = ff.__getstate__()
    del state["_mlmlearn_version"]
    with pytest.warns(ModelVersionWarning, match="saved by mlmlearn unknown"):
        ForceField.__new__(ForceField).__setstate__(state)


# ------------------------------------------------------------------ bad input
def test_net_force_removal_needs_whole_structures(ff, rings):
    frames = rings["test"][:2]
    env = AtomicEnvironments(frames)
    n0 = len(frames[0])
    formula = frames[1].get_chemical_formula()
    part = env[np.r_[0:n0, n0:n0 + 10]]
    with pytest.raises(ValueError, match=rf"structure 1 \({formula}\) has 10 of its "
                                         rf"{len(frames[1])} atoms in X"):
        ff.predict(part)
    twice = env[np.r_[0:n0 - 1, 0]]  # as many rows as atoms, one atom twice
    with pytest.raises(ValueError, match="structure 0 .* removing the net force needs whole"):
        ff.predict(twice)
    raw = copy.deepcopy(ff).set_params(remove_net_force=None)
    got, whole = raw.predict(part), raw.predict(env)[: n0 + 10]
    labels = _labels(part)
    for t in raw.types_:
        rows = np.flatnonzero(labels == t)
        nu = np.linalg.norm(whole[rows], axis=1)
        bound = _force_gap(raw.norm_models_[t], raw.direction_models_[t], nu, part[rows],
                           env[rows])
        assert np.all(np.linalg.norm(got[rows] - whole[rows], axis=1) <= bound)


def test_periodic_structures_with_cluster_descriptors_raise_naming_the_structure(ff, rings):
    periodic = rings["test"][1].copy()
    periodic.calc = None
    periodic.cell = [30.0, 30.0, 30.0]
    periodic.pbc = True
    message = (rf"structure 1 \({periodic.get_chemical_formula()}\) is periodic .* "
               r"norm__soap__periodic=False|structure 1 .*soap__periodic=False")
    with pytest.raises(ValueError, match=message):
        ff.predict([rings["test"][0], periodic])
    y = np.ones((len(rings["test"][0]) + len(periodic), 3))
    with pytest.raises(ValueError, match="structure 1 .* is periodic"):
        _small_force_field().fit(AtomicEnvironments([rings["test"][0], periodic]), y)


def test_uncertainty_is_each_types_direction_uncertainty(ff, rings):
    env = AtomicEnvironments(rings["test"])
    F, u = ff.predict(env, return_uncertainty=True)
    assert F.shape == (len(env), 3) and u.shape == (len(env),)
    np.testing.assert_array_equal(F, ff.predict(env))
    assert np.all(np.isfinite(u)) and np.all(u >= 0)
    labels = _labels(env)
    for t in ff.types_:
        rows = np.flatnonzero(labels == t)
        _, expected = ff.direction_models_[t].predict(env[rows], return_uncertainty=True)
        np.testing.assert_array_equal(u[rows], expected)


def test_norms_are_clipped_to_the_training_range(ff, rings):
    # a ring squeezed by 15 %: far from the training data, where a distance
    # regression runs away linearly
    atoms = rings["test"][4].copy()
    atoms.calc = None
    atoms.positions *= 0.85
    clipped = copy.deepcopy(ff).set_params(remove_net_force=None)
    free = copy.deepcopy(clipped).set_params(clip_norms=False)
    F, G = clipped.predict(atoms), free.predict(atoms)
    labels = _labels(AtomicEnvironments(atoms))
    limit = np.array([ff.max_norm_[t] for t in labels])
    nu, mu = np.linalg.norm(F, axis=1), np.linalg.norm(G, axis=1)
    # |ν v̂| with |v̂| = 1 to rounding (3u for the normalisation, 2u for the product)
    assert np.all(nu <= limit * (1 + 5 * U))
    over = mu > limit * (1 + 5 * U)
    assert over.any(), "the squeezed ring should push some norm past the training range"
    np.testing.assert_allclose(nu[over], limit[over], rtol=5 * U)
    np.testing.assert_array_equal(F[~over & (mu < limit * (1 - 5 * U))],
                                  G[~over & (mu < limit * (1 - 5 * U))])
