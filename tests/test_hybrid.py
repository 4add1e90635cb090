"""partial_fit (EMLM, OAMLM, ForceField) and the hybrid optimizer.

The partial_fit oracle: with the references fixed, fit(A) then partial_fit(B) is the
fit on A ∪ B. Both are computed solutions of the same normal equations; each is within
its first-order error bound of the exact solution (bounds from the data's conditioning,
``_numerics``), so the two differ by at most the sum of the bounds.
"""

import copy
import pickle

import numpy as np
import pytest
from _numerics import U, distance_bound, gamma, ridge_solution_bound
from sklearn.base import BaseEstimator, TransformerMixin

from mlmlearn import EMLM
from mlmlearn._distances import euclidean_distances


class FixedReferences(TransformerMixin, BaseEstimator):
    """A reference selector that picks the given rows (so two fits share references)."""

    def __init__(self, indices=None):
        self.indices = indices

    def fit(self, X, y=None):
        self.indices_ = np.asarray(self.indices, dtype=np.intp)
        return self

    def transform(self, X):
        return X


def _data(n=300, d=4, outputs=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    if outputs:
        y = np.column_stack([y * (j + 1) + j for j in range(outputs)])
    return X, y.reshape(n, -1)


def _gram_errors(D, eD, Y, eY=0.0):
    """Norm bounds on the errors of ``DᵀD`` and ``DᵀY`` formed from a computed ``D``
    (elementwise errors ``eD``) and ``Y`` (errors ``eY``), in any summation order."""
    n = D.shape[0]
    nD, fD, fY = np.linalg.norm(eD), np.linalg.norm(D), np.linalg.norm(Y)
    s_max = np.linalg.norm(D, 2)
    nY = np.linalg.norm(np.broadcast_to(eY, Y.shape))
    dG = 2 * s_max * nD + nD**2 + gamma(n) * fD**2
    dB = nD * fY + s_max * nY + nD * nY + gamma(n) * fD * fY
    return dG, dB


def partial_fit_bound(D_A, eD_A, Y_A, D_B, eD_B, Y_B, weights, W_old, W_new, beta, mean_old,
                      mean_new, beta_old=None):
    """Bound on ``‖Ŵ_new − W_exact‖_F`` after ``NormalEquations.update``, one run.

    The exact solution on A ∪ B solves ``A'W = b'``. The update computes
    ``Ŵ_new = Ŵ_old + Δ̂`` with ``Δ̂`` the Cholesky solution of the stored statistics
    for the residual ``r̂``; exactly, ``b' − A'Ŵ_old = ρ_old + r`` with ``ρ_old`` the
    old solution's normal-equation residual. Hence
    ``A'(Ŵ_new − W_exact) = −ρ_old − (r̂ − r) − E Δ̂`` with ``E`` every perturbation of
    the stored ``A'`` (forming the Grams, adding them, Cholesky's backward error
    K·γ_{3K+1}‖A'‖), and ``‖A'⁻¹‖ = 1/(σ_min(D_{A∪B})² + λ)``. The centred targets
    carry the rounding of their means (``eY``). Weights must be integers here (the
    bound treats a weight m as m repeated rows). A change of β from ``beta_old`` adds
    ``−(λ' − λ)Ŵ_old`` to the residual, formed with relative error 2u.
    """
    K = D_A.shape[1]
    lam = beta / K
    lam_old = lam if beta_old is None else beta_old / K
    w = np.asarray(weights, dtype=float)
    rep = np.repeat(np.arange(len(D_B)), w.astype(int))
    D_all = np.vstack([D_A, D_B[rep]])
    s = np.linalg.svd(D_all, compute_uv=False)
    inv_norm = 1.0 / ((s[-1] ** 2 if D_all.shape[0] >= K else 0.0) + lam)
    a_norm = s[0] ** 2 + lam
    # the old fit: Gram and right-hand side of the centred targets (mean rounding γ_n|ȳ|)
    eY_A = gamma(len(Y_A) + 1) * (np.abs(Y_A).max(axis=0) + np.abs(mean_old))
    Yc_A = Y_A - mean_old
    dG_A, dB_A = _gram_errors(D_A, eD_A, Yc_A, eY_A)
    chol_old = K * gamma(3 * K + 1) * (s[0] ** 2 + lam_old)  # ‖A_old‖ ≤ that
    rho_old = (dG_A + chol_old) * np.linalg.norm(W_old) + dB_A
    # the new rows: their Gram (scaled by the weights), its sum with the stored one
    Dw = D_B * np.sqrt(w)[:, None]
    eDw = eD_B * np.sqrt(w)[:, None] + U * np.abs(Dw)
    dG_B, _ = _gram_errors(Dw, eDw, np.zeros((len(D_B), 1)))
    E = dG_A + dG_B + U * a_norm * K + K * gamma(3 * K + 1) * a_norm
    # the residual r̂ = D_Bᵀ diag(w)(Y_B − ȳ' − D_B Ŵ) − s Δȳᵀ and its rounding
    absW = np.abs(W_old)
    R_abs = np.abs(Y_B) + np.abs(mean_new) + np.abs(D_B) @ absW
    eR = gamma(K + 2) * R_abs + eD_B @ absW + gamma(len(Y_B) + 2) * np.abs(mean_new)
    eR_total = (gamma(len(D_B)) * (np.abs(Dw).T @ (np.sqrt(w)[:, None] * R_abs))
                + (eDw.T @ (np.sqrt(w)[:, None] * R_abs))
                + np.abs(Dw).T @ (np.sqrt(w)[:, None] * eR))
    shift = mean_new - mean_old
    sums = np.abs(D_A).sum(axis=0)
    e_sums = gamma(len(D_A)) * sums + eD_A.sum(axis=0)
    e_shift = gamma(len(Y_B) + 2) * (w @ (np.abs(Y_B) + np.abs(mean_old))) / w.sum() \
        + U * np.abs(mean_new)
    e_outer = (np.outer(e_sums, np.abs(shift)) + np.outer(sums, e_shift)
               + U * np.outer(sums, np.abs(shift)))
    dr = np.linalg.norm(eR_total) + np.linalg.norm(e_outer) + U * np.linalg.norm(
        np.abs(Dw).T @ (np.sqrt(w)[:, None] * R_abs) + np.outer(sums, np.abs(shift)))
    dr += 2 * U * abs(lam - lam_old) * np.linalg.norm(W_old)
    delta = np.linalg.norm(W_new - W_old)
    denom = 1.0 - inv_norm * E
    assert denom > 0.5, "the perturbation is too large for a first-order bound"
    return inv_norm * (rho_old + dr + E * delta) / denom + U * np.linalg.norm(W_new)


def _oracle_pair(fit_intercept, weights=None, beta=1e-3, outputs=None):
    """fit(A) + partial_fit(B) and fit(A ∪ B repeated by the weights), same references."""
    X, Y = _data(outputs=outputs)
    A, B = np.arange(200), np.arange(200, 300)
    references = FixedReferences(np.arange(0, 200, 4))
    y = Y if outputs else Y[:, 0]
    model = EMLM(references=references, beta=beta, fit_intercept=fit_intercept).fit(X[A], y[A])
    before = copy.deepcopy(model)
    model.partial_fit(X[B], y[B], sample_weight=weights)
    rep = B if weights is None else np.repeat(B, np.asarray(weights, dtype=int))
    full = EMLM(references=references, beta=beta, fit_intercept=fit_intercept).fit(
        X[np.concatenate([A, rep])], y[np.concatenate([A, rep])])
    return X, Y, A, B, before, model, full


@pytest.mark.parametrize("weights", [None, "integers"])
@pytest.mark.parametrize("outputs", [None, 3])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_emlm_partial_fit_is_the_fit_on_all_rows(fit_intercept, outputs, weights):
    """fit(A) then partial_fit(B) equals fit(A ∪ B) with the same references, and an
    integer weight m equals the row repeated m times; within the two runs' bounds."""
    w = None if weights is None else np.random.default_rng(1).integers(0, 4, 100)
    X, Y, A, B, before, model, full = _oracle_pair(fit_intercept, w, outputs=outputs)
    Q = full.references_
    D_A = euclidean_distances(X[A], Q)
    D_B = euclidean_distances(X[B], Q)
    w_arr = np.ones(len(B)) if w is None else w.astype(float)
    zero = np.zeros(Y.shape[1])
    bound_pf = partial_fit_bound(
        D_A, distance_bound(X[A], Q, D_A), Y[A], D_B, distance_bound(X[B], Q, D_B), Y[B], w_arr,
        before.coef_.reshape(len(Q), -1), model.coef_.reshape(len(Q), -1), model.beta,
        before.intercept_ if fit_intercept else zero, model.intercept_ if fit_intercept else zero)
    rep = np.concatenate([A, np.repeat(B, w_arr.astype(int))])
    D_all = euclidean_distances(X[rep], Q)
    Yc = Y[rep] - full.intercept_
    eY = gamma(len(rep) + 1) * (np.abs(Y[rep]).max(axis=0) + np.abs(full.intercept_))
    bound_full = ridge_solution_bound(D_all, Yc, full.beta, full.coef_.reshape(len(Q), -1),
                                      distance_bound(X[rep], Q, D_all),
                                      np.broadcast_to(eY, Yc.shape))
    difference = np.linalg.norm(model.coef_ - full.coef_)
    assert difference <= bound_pf + bound_full
    # the intercepts: two orders of summing the same weighted mean
    n = len(rep)
    mean_bound = 2 * gamma(n + 2) * np.abs(Y[rep]).max(axis=0)
    assert np.all(np.abs(model.intercept_ - full.intercept_) <= mean_bound)
    # the test could fail: B moves the solution far more than the bound allows
    assert np.linalg.norm(model.coef_ - before.coef_) > bound_pf + bound_full


def test_partial_fit_refuses_what_it_cannot_update():
    X, Y = _data()
    y = Y[:, 0]
    with pytest.raises(NotImplementedError, match="beta=0"):
        EMLM(references=20, beta=0.0).fit(X, y).partial_fit(X[:5], y[:5])
    model = EMLM(references=20).fit(X, y)
    with pytest.raises(ValueError, match="fit_intercept=False differs"):
        model.set_params(fit_intercept=False).partial_fit(X[:5], y[:5])
    with pytest.raises(ValueError, match="4 features"):
        EMLM(references=20).fit(X, y).partial_fit(X[:5, :3], y[:5])
    with pytest.raises(ValueError, match="outputs"):
        EMLM(references=20).fit(X, y).partial_fit(X[:5], Y[:5].repeat(2, axis=1))
    with pytest.raises(ValueError, match="sample_weight"):
        EMLM(references=20).partial_fit(X, y, sample_weight=np.ones(len(X)))
    with pytest.raises(ValueError, match="(?i)negative"):
        EMLM(references=20).fit(X, y).partial_fit(X[:5], y[:5], sample_weight=-np.ones(5))


def test_partial_fit_of_an_unfitted_emlm_is_fit():
    X, Y = _data()
    a = EMLM(references=20).partial_fit(X, Y[:, 0])
    b = EMLM(references=20).fit(X, Y[:, 0])
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.reference_indices_, b.reference_indices_)


def test_partial_fit_with_a_new_beta_is_the_fit_with_that_beta():
    """The update carries the change of β/K: partial_fit after set_params(beta=...)
    equals a fit on all rows with the new β (same references), within both bounds."""
    X, Y = _data()
    A, B = np.arange(200), np.arange(200, 300)
    references = FixedReferences(np.arange(0, 200, 4))
    model = EMLM(references=references, beta=1e-3, fit_intercept=False).fit(X[A], Y[A, 0])
    before = copy.deepcopy(model)
    model.set_params(beta=1e-2).partial_fit(X[B], Y[B, 0])
    full = EMLM(references=references, beta=1e-2, fit_intercept=False).fit(X, Y[:, 0])
    Q = full.references_
    D_A, D_B, D = (euclidean_distances(X[r], Q) for r in (A, B, np.arange(300)))
    zero = np.zeros(1)
    bound_pf = partial_fit_bound(
        D_A, distance_bound(X[A], Q, D_A), Y[A], D_B, distance_bound(X[B], Q, D_B), Y[B],
        np.ones(len(B)), before.coef_.reshape(-1, 1), model.coef_.reshape(-1, 1), 1e-2, zero,
        zero, beta_old=1e-3)
    bound_full = ridge_solution_bound(D, Y[:, :1], 1e-2, full.coef_.reshape(-1, 1),
                                      distance_bound(X, Q, D), np.zeros((len(X), 1)))
    assert np.linalg.norm(model.coef_ - full.coef_) <= bound_pf + bound_full


# ------------------------------------------------------------------ OAMLM, ForceField
@pytest.fixture(scope="module")
def ring_frames():
    pytest.importorskip("ase")
    pytest.importorskip("dscribe")
    from mlmlearn.datasets import load_gold_thiolate_rings

    return [f for f in load_gold_thiolate_rings().frames if len(f) == 24][::40]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_oamlm_partial_fit_is_the_fit_on_all_rows(ring_frames):
    """The OAMLM's B_c and B_g after partial_fit(B) are the least-squares fit on A ∪ B
    with the same references and descriptor (SOAP alone: its fit depends on the species,
    the same in A and B), within both runs' bounds; the Huber path is refused."""
    from mlmlearn import OAMLM
    from mlmlearn.atoms import SOAP, AtomicEnvironments
    from mlmlearn.oamlm import GoldThiolateAlignment
    from mlmlearn.oamlm._oamlm import _fit_products, _unit_forces

    env = AtomicEnvironments(ring_frames, species="S")
    n = len(env)
    A, B = np.arange(2 * n // 3), np.arange(2 * n // 3, n)

    def model(**kwargs):
        return OAMLM(SOAP(r_cut=4.0, n_max=3, l_max=2, sigma=0.5),
                     alignment=GoldThiolateAlignment(),
                     references=FixedReferences(np.arange(0, len(A), 2)), beta=1e-3, **kwargs)

    m = model().fit(env[A], env.forces[A])
    before = copy.deepcopy(m)
    m.partial_fit(env[B], env.forces[B], sample_weight=np.full(len(B), 2.0))
    rep = np.concatenate([A, B, B])
    full = model().fit(env[rep], env.forces[rep])
    np.testing.assert_array_equal(m.references_, full.references_)
    F = full.descriptor_.transform(env)
    Q = full.references_
    D_c, D_g = _fit_products(full.alignment_, full.alignment_.neighborhoods(env),
                             full.reference_neighborhoods_, full.reference_directions_,
                             _unit_forces(env.forces, n), None, 0)
    Y = np.hstack([D_c, D_g])
    D_A, D_B, D = (euclidean_distances(F[r], Q) for r in (A, B, rep))
    k = len(Q)
    zero = np.zeros(2 * k)
    stack = np.hstack
    bound_pf = partial_fit_bound(
        D_A, distance_bound(F[A], Q, D_A), Y[A], D_B, distance_bound(F[B], Q, D_B), Y[B],
        np.full(len(B), 2.0), stack([before.coef_c_, before.coef_g_]),
        stack([m.coef_c_, m.coef_g_]), m.beta, zero, zero)
    W_full = stack([full.coef_c_, full.coef_g_])
    bound_full = ridge_solution_bound(D, Y[rep], full.beta, W_full, distance_bound(F[rep], Q, D),
                                      np.zeros_like(Y[rep]))
    difference = np.linalg.norm(stack([m.coef_c_, m.coef_g_]) - W_full)
    assert difference <= bound_pf + bound_full
    assert np.linalg.norm(stack([m.coef_c_, m.coef_g_]) - stack(
        [before.coef_c_, before.coef_g_])) > bound_pf + bound_full

    huber = model(epsilon=1.35).fit(env[A], env.forces[A])
    with pytest.raises(NotImplementedError, match="epsilon=1.35"):
        huber.partial_fit(env[B], env.forces[B])


@pytest.fixture(scope="module")
def small_force_field(ring_frames):
    from mlmlearn.atoms import AtomicEnvironments
    from mlmlearn.forcefield import ForceField, default_direction_model, default_norm_model

    # β/K above the default: 30 references and about as many environments of a type
    return ForceField(default_norm_model(30).set_params(emlm__beta=1e-4),
                      default_direction_model(30).set_params(beta=1e-4)).fit(
        AtomicEnvironments(ring_frames[::2]))


def test_force_field_partial_fit_routes_each_type_to_its_models(ring_frames, small_force_field):
    """ForceField.partial_fit equals, type by type, the norm pipeline's final EMLM given
    the fitted steps' rows and the OAMLM given the environments (bit for bit); counts
    and clip norms grow; the input models are not modified (copies are updated)."""
    from mlmlearn.atoms import AtomicEnvironments

    ff = copy.deepcopy(small_force_field)
    originals = {t: (ff.norm_models_[t], ff.direction_models_[t]) for t in ff.types_}
    frozen = pickle.dumps(originals)
    env = AtomicEnvironments(ring_frames[1::2])
    labels = ff.atom_types(env)
    keep = np.flatnonzero(np.isin(labels, ff.types_))
    env, labels = env[keep], labels[keep]
    n_before, max_before = dict(ff.n_samples_), dict(ff.max_norm_)
    weights = np.linspace(0.5, 2.0, len(env))
    ff.partial_fit(env, sample_weight=weights)
    assert pickle.dumps(originals) == frozen
    norms = np.linalg.norm(env.forces, axis=1)
    for t in ff.types_:
        rows = np.flatnonzero(labels == t)
        norm_model, direction_model = copy.deepcopy(originals[t])
        norm_model[-1].partial_fit(norm_model[:-1].transform(env[rows]), norms[rows],
                                   sample_weight=weights[rows])
        direction_model.partial_fit(env[rows], env.forces[rows], sample_weight=weights[rows])
        np.testing.assert_array_equal(ff.norm_models_[t][-1].coef_, norm_model[-1].coef_)
        np.testing.assert_array_equal(ff.direction_models_[t].coef_c_, direction_model.coef_c_)
        np.testing.assert_array_equal(ff.direction_models_[t].coef_g_, direction_model.coef_g_)
        assert ff.n_samples_[t] == n_before[t] + len(rows)
        assert ff.max_norm_[t] == max(max_before[t], norms[rows].max())


def test_force_field_partial_fit_refuses_types_without_a_model(ring_frames):
    """A force field without a hydrogen model refuses whole structures at partial_fit,
    naming an atom and the type, and is left as it was."""
    from mlmlearn.atoms import AtomicEnvironments
    from mlmlearn.forcefield import (
        ForceField,
        UnknownAtomTypeError,
        default_direction_model,
        default_norm_model,
    )

    ff = ForceField(default_norm_model(20), default_direction_model(20)).fit(
        AtomicEnvironments(ring_frames[::2], species=["Au", "S", "C"]))
    assert "H" not in ff.types_
    frozen = pickle.dumps(ff)
    with pytest.raises(UnknownAtomTypeError,
                       match=r"atom \d+ of structure \d+ \(\w+\) is of atom type '(Au_core|H)'"):
        ff.partial_fit(AtomicEnvironments(ring_frames[1::2]))
    assert pickle.dumps(ff) == frozen


def test_force_field_partial_fit_is_all_or_nothing(ring_frames, small_force_field):
    """A model that fails leaves every type's models as they were."""
    from mlmlearn.atoms import AtomicEnvironments

    class Failing:
        def partial_fit(self, X, y, sample_weight=None):
            raise RuntimeError("this model fails")

    ff = copy.deepcopy(small_force_field)
    ff.direction_models_["S"] = Failing()
    env = AtomicEnvironments(ring_frames[1::2])
    env = env[np.flatnonzero(np.isin(ff.atom_types(env), ff.types_))]
    models = {t: (ff.norm_models_[t], ff.direction_models_[t]) for t in ff.types_}
    frozen = pickle.dumps({t: m for t, m in models.items() if t != "S"})
    with pytest.raises(RuntimeError, match="this model fails"):
        ff.partial_fit(env)
    for t in ff.types_:
        assert ff.norm_models_[t] is models[t][0] and ff.direction_models_[t] is models[t][1]
    assert pickle.dumps({t: m for t, m in models.items() if t != "S"}) == frozen


# --------------------------------------------------------------------- hybrid optimizer
@pytest.fixture(scope="module")
def gfn2():
    """A GFN2-xTB calculator factory on one thread; calculators count their calculations."""
    tblite = pytest.importorskip("tblite.ase")
    from threadpoolctl import threadpool_limits

    class Counting(tblite.TBLite):
        n_calculations = 0
        fail_at = ()

        def calculate(self, *args, **kwargs):
            self.n_calculations += 1
            if self.n_calculations - 1 in self.fail_at:
                from ase.calculators.calculator import CalculationFailed

                raise CalculationFailed("SCF not converged (test)")
            super().calculate(*args, **kwargs)

    with threadpool_limits(1):  # 24 atoms: threads cost more than they give
        yield lambda: Counting(method="GFN2-xTB", verbosity=0)


@pytest.fixture(scope="module")
def au4_start(gfn2):
    """The GFN2-xTB minimum of the built Au4(SCH3)4 ring, rattled by 0.05 Å."""
    from ase.optimize import BFGS

    from mlmlearn.datasets import gold_thiolate_ring

    atoms = gold_thiolate_ring(4)
    atoms.calc = gfn2()
    BFGS(atoms, logfile=None).run(fmax=0.02, steps=200)
    start = atoms.copy()
    start.rattle(0.05, seed=0)
    return start


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory, gfn2, au4_start, small_force_field):
    from mlmlearn.applications.hybrid import hybrid_optimize

    frozen = pickle.dumps(small_force_field)
    reference = gfn2()
    trajectory = tmp_path_factory.mktemp("hybrid") / "hybrid.extxyz"
    result = hybrid_optimize(au4_start, small_force_field, reference, trajectory=trajectory)
    return result, reference, frozen


def test_hybrid_counts_every_reference_call(hybrid_run):
    result, reference, _ = hybrid_run
    assert reference.n_calculations == result.n_reference_calls
    n = result.n_reference_calls
    for record in (result.reference_energies, result.reference_fmax, result.kinds,
                   result.accepted, result.ml_steps):
        assert len(record) == n
    assert result.kinds[0] == "start" and set(result.kinds) <= {
        "start", "ml", "uncertainty", "domain", "reference"}
    assert result.n_ml_steps == result.ml_steps.sum()


def test_hybrid_converges_on_the_reference_forces(hybrid_run, gfn2):
    """Converged means the reference fmax is below fmax: at the final structure (a fresh
    single point agrees with the recorded forces to the SCF tolerance), and at no
    earlier call, since the run stops at the first."""
    from ase.io import read

    result, _, _ = hybrid_run
    assert result.converged and result.stop_reason == "converged"
    assert result.reference_fmax[-1] < 0.05 <= result.reference_fmax[:-1].min()
    check = result.atoms.copy()
    check.calc = gfn2()
    forces = check.get_forces()
    np.testing.assert_allclose(forces, result.atoms.get_forces(), atol=1e-4)
    assert np.linalg.norm(forces, axis=1).max() < 0.05 + 1e-4
    frames = read(result.trajectory, ":")
    assert len(frames) == result.n_reference_calls
    np.testing.assert_allclose([f.get_potential_energy() for f in frames],
                               result.reference_energies, rtol=1e-12)
    assert [f.info["kind"] for f in frames] == result.kinds.tolist()
    np.testing.assert_allclose(frames[-1].positions, result.atoms.positions, atol=1e-7)


def test_hybrid_leaves_the_users_force_field_untouched(hybrid_run, small_force_field):
    result, _, frozen = hybrid_run
    assert pickle.dumps(small_force_field) == frozen
    assert result.force_field is not small_force_field and result.n_refits > 0
    for t in small_force_field.types_:
        assert result.force_field.n_samples_[t] > small_force_field.n_samples_[t]


def test_hybrid_without_refit_uses_the_force_field_as_it_is(gfn2, au4_start, small_force_field):
    from mlmlearn.applications.hybrid import hybrid_optimize

    frozen = pickle.dumps(small_force_field)
    result = hybrid_optimize(au4_start, small_force_field, gfn2(), refit=False,
                             max_reference_calls=3)
    assert result.force_field is small_force_field and result.n_refits == 0
    assert pickle.dumps(small_force_field) == frozen
    assert result.n_reference_calls == 3 and result.stop_reason == "reference_calls"


def _subclass(force_field, predict):
    """A copy of ``force_field`` whose ``predict`` is ``predict(self, X, **kwargs)``."""
    from mlmlearn.forcefield import ForceField

    cls = type("Patched", (ForceField,), {"predict": predict})
    patched = copy.deepcopy(force_field)
    patched.__class__ = cls
    return patched


def test_hybrid_steps_on_the_reference_where_the_force_field_has_no_answer(
        gfn2, au4_start, small_force_field):
    """Domain errors (a type without a model, missing alignment partners) never crash
    the run: a round stopped by one is checked at its last predicted structure, and
    where the force field cannot start, the reference steps (from ASE's identity
    Hessian when the force field's Hessian cannot be taken either)."""
    from mlmlearn.applications.hybrid import hybrid_optimize
    from mlmlearn.atoms import MissingNeighborsError
    from mlmlearn.forcefield import ForceField

    calls = []

    def predict(self, X, **kwargs):
        calls.append(1)
        if len(calls) >= 4:  # the round's start, its first step, then the domain is left
            raise MissingNeighborsError("atom 5 has no neighbour within 3.0 Å (test)")
        return ForceField.predict(self, X, **kwargs)

    reference = gfn2()
    result = hybrid_optimize(au4_start, _subclass(small_force_field, predict), reference,
                             max_reference_calls=4)
    assert reference.n_calculations == result.n_reference_calls == 4
    assert result.kinds.tolist() == ["start", "domain", "reference", "reference"]
    assert result.ml_steps.tolist() == [0, 1, 0, 0]
    assert result.hessian_calls == []


def test_hybrid_rejects_a_round_that_raises_the_reference_energy(gfn2, au4_start,
                                                                 small_force_field):
    """Forces pointing uphill (the force field's, negated) make the ML round climb: the
    reference energy rises, the round is rejected, and the optimization goes on from
    the structure it stood on with reference steps."""
    from mlmlearn.applications.hybrid import hybrid_optimize
    from mlmlearn.forcefield import ForceField

    def uphill(self, X, return_uncertainty=False):
        out = ForceField.predict(self, X, return_uncertainty=return_uncertainty)
        return (-out[0], out[1]) if return_uncertainty else -out

    result = hybrid_optimize(au4_start, _subclass(small_force_field, uphill), gfn2(),
                             max_reference_calls=3)
    assert result.kinds[1] in ("ml", "uncertainty")
    assert result.reference_energies[1] > result.reference_energies[0]
    assert result.accepted.tolist() == [True, False, True]
    assert result.kinds[2] == "reference"


def test_hybrid_counts_failed_reference_calculations(gfn2, au4_start, small_force_field):
    """A failed calculation is a call: after an ML round it rejects the round; on a
    reference step the step is taken again, half as long."""
    from mlmlearn.applications.hybrid import hybrid_optimize

    reference = gfn2()
    reference.fail_at = (1, 2)
    result = hybrid_optimize(au4_start, small_force_field, reference, refit=False,
                             max_reference_calls=4)
    assert reference.n_calculations == result.n_reference_calls == 4
    assert result.accepted.tolist() == [True, False, False, True]
    assert np.isnan(result.reference_energies[1:3]).all()
    assert result.kinds[2] == result.kinds[3] == "reference"


def test_hybrid_refuses_bad_arguments(au4_start, small_force_field):
    from ase.calculators.calculator import Calculator

    from mlmlearn.applications.hybrid import hybrid_optimize

    class ForcesOnly(Calculator):
        implemented_properties = ["forces"]

        def calculate(self, atoms=None, properties=("forces",), system_changes=None):
            super().calculate(atoms, properties, system_changes)
            self.results["forces"] = np.zeros((len(atoms), 3))

    for kwargs, match in [({"fmax": 0.0}, "fmax=0.0"), ({"ml_steps": -1}, "ml_steps=-1"),
                          ({"max_uncertainty": -1.0}, "max_uncertainty=-1.0"),
                          ({"trajectory": "run.traj"}, "trajectory='run.traj'"),
                          ({"max_reference_calls": 0}, "max_reference_calls=0")]:
        with pytest.raises(ValueError, match=match):
            hybrid_optimize(au4_start, small_force_field, ForcesOnly(), **kwargs)
    with pytest.raises(ValueError, match="gave no energy"):
        hybrid_optimize(au4_start, small_force_field, ForcesOnly())
