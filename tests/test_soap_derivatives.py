"""SOAP.sparse_derivatives: dscribe's analytic gradient over the pairs within the cutoff.

Oracles: dscribe's dense analytic derivatives (``SOAP.derivatives``), a plain
numpy contraction of the same expansion, dscribe's periodic ``create`` and a
finite cluster of periodic images, and central finite differences of
``transform``.
"""

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("numba")
from _numerics import gamma  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import molecule  # noqa: E402
from dscribe.descriptors import SOAP as DscribeSOAP  # noqa: E402

from mlmlearn.atoms import SOAP, AtomicEnvironments  # noqa: E402
from mlmlearn.atoms import _soap_gradient as sg  # noqa: E402
from mlmlearn.datasets import gold_thiolate_ring  # noqa: E402

SPECIES = ["H", "C", "S", "Au"]
#: dscribe skips a term of the power spectrum's derivative when both coefficients are below this
DSCRIBE_SKIP = 1e-8
#: Rounding of the coefficients, relative to a centre's largest derivative: the two codes sum
#: the same ≤ n_neighbours·n_max terms (a few hundred) in different orders, each bounded by the
#: centre's largest coefficient, and 2(2l+1) ≤ 30 products of them make a feature's derivative:
#: ≈ 30 · 300 · u ≈ 5e-13; dscribe's tabulated harmonics carry 15 significant digits.
COEFFICIENT_RTOL = 1e-12


def _jiggled(atoms, seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    out.positions += rng.normal(scale=scale, size=out.positions.shape)
    return out


def _soap(**kw):
    params = dict(species=SPECIES, r_cut=4.0, n_max=4, l_max=3, sigma=0.25)
    params.update(kw)
    # fitted on every element as a centre, as a potential's descriptor is
    every = Atoms("HCSAu", positions=np.arange(12.0).reshape(4, 3))
    return SOAP(**params).fit([every])


def _scatter(centre, atom, dX, n):
    full = np.zeros((n, n) + dX.shape[1:])
    full[centre, atom] = dX
    return full


def _expansion(soap, atoms):
    constants = sg.gto_constants(float(soap.r_cut), soap.n_max, soap.l_max, float(soap.sigma))
    known = np.array(sorted(atoms_number(s) for s in soap.species_))
    periodic = soap.periodic and atoms.pbc.any()
    ex = sg.soap_expansion(atoms.positions, np.searchsorted(known, atoms.numbers), len(known),
                           constants, cell=np.asarray(atoms.cell) if periodic else None,
                           pbc=atoms.pbc if periodic else None)
    return ex, constants


def atoms_number(symbol):
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


def _reference(ex, constants, *, skip):
    """Plain numpy ∂p/∂r of every (centre, atom) pair from the expansion, dense (n, n, 3, F).

    With ``skip`` the terms dscribe leaves out (both coefficients below 1e-8 in
    dscribe's normalisation) are left out. Also returns ``T``, the sum of the
    terms' magnitudes, which bounds the rounding of a reordered sum.
    """
    c, D, Dd = ex["c"], ex["D"], ex["Dd"]
    n, S, N, LL = c.shape
    n_l = int(round(np.sqrt(LL)))
    table = sg.feature_table(S, N, n_l - 1)
    grad = np.zeros((n, n, 3, S, N, LL))
    grad[ex["pair_centre"], ex["pair_atom"], :, ex["pair_species"]] = D
    grad[np.arange(n), np.arange(n)] = Dd
    l_of = np.repeat(np.arange(n_l), 2 * np.arange(n_l) + 1)
    dscribe_scale = np.where(l_of >= 2, np.pi**1.5, 1.0)  # our l ≥ 2 coefficients over dscribe's
    out = np.zeros((n, n, 3, len(table)))
    T = np.zeros_like(out)
    for f, (s1, s2, l, n1, n2) in enumerate(table):
        m = slice(l * l, (l + 1) ** 2)
        c1, c2 = c[:, s1, n1, m], c[:, s2, n2, m]
        keep = np.ones(c1.shape, bool)
        if skip:
            keep = (np.abs(c1 / dscribe_scale[m]) > DSCRIBE_SKIP) | (
                np.abs(c2 / dscribe_scale[m]) > DSCRIBE_SKIP)
        g1, g2 = grad[:, :, :, s1, n1, m], grad[:, :, :, s2, n2, m]
        k2, k1 = (c2 * keep)[:, None, None], (c1 * keep)[:, None, None]
        out[..., f] = constants["prel"][l] * (g1 * k2 + g2 * k1).sum(-1)
        T[..., f] = constants["prel"][l] * (np.abs(g1 * k2) + np.abs(g2 * k1)).sum(-1)
    return out, T


def _centre_scale(dense):
    return np.abs(dense).max(axis=(1, 2, 3), keepdims=True)


STRUCTURES = {
    "ring4": lambda: _jiggled(gold_thiolate_ring(4), 0),
    "ring5": lambda: _jiggled(gold_thiolate_ring(5), 1),
    "methane": lambda: _jiggled(molecule("CH4"), 2),  # no S, no Au anywhere
    "apart": lambda: _jiggled(molecule("CH4") + Atoms("AuS", [[12.0, 0, 0], [14.3, 0, 0]]), 4),
}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_rows_equal_transform(name):
    atoms = STRUCTURES[name]()
    soap = _soap()
    X, *_ = soap.sparse_derivatives(atoms)
    np.testing.assert_array_equal(X, soap.transform(AtomicEnvironments([atoms])))
    soap32 = _soap(dtype="float32")
    X32, *_ = soap32.sparse_derivatives(atoms)
    assert X32.dtype == np.float32
    np.testing.assert_array_equal(X32, soap32.transform(AtomicEnvironments([atoms])))


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_pairs_are_the_padded_cutoff_and_cover_dscribe(name):
    atoms = STRUCTURES[name]()
    soap = _soap()
    _, centre, atom, _ = soap.sparse_derivatives(atoms)
    n = len(atoms)
    cutoff = 4.0 + soap.descriptor_.get_cutoff_padding()
    delta = atoms.positions[None, :, :] - atoms.positions[:, None, :]
    d2 = delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1] + delta[..., 2] * delta[
        ..., 2]
    expected = (d2 <= cutoff * cutoff) | np.eye(n, dtype=bool)
    got = np.zeros((n, n), bool)
    got[centre, atom] = True
    np.testing.assert_array_equal(got, expected)
    assert len(centre) == expected.sum()  # each pair once
    assert np.all(np.diff(centre * n + atom) > 0)  # sorted by centre, then atom
    _, dense = soap.derivatives(atoms)
    nonzero = np.abs(dense).max(axis=(2, 3)) > 0
    assert not (nonzero & ~got).any()


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_sparse_equals_dense(name):
    atoms = STRUCTURES[name]()
    soap = _soap()
    _, centre, atom, dX = soap.sparse_derivatives(atoms)
    _, dense = soap.derivatives(atoms)
    ex, constants = _expansion(soap, atoms)
    full, T = _reference(ex, constants, skip=False)
    skipped, _ = _reference(ex, constants, skip=True)
    n = len(atoms)
    ours = _scatter(centre, atom, dX, n)
    # the kernel is the plain contraction of the same coefficients, summed in another order
    k = 2 * (2 * soap.l_max + 1) + 2
    assert np.all(np.abs(ours - full) <= gamma(k) * T)
    # dscribe is the same contraction without its skipped terms, from its own coefficients
    scale = _centre_scale(dense)
    assert np.all(np.abs(dense - skipped) <= COEFFICIENT_RTOL * scale)
    # so ours differs from dscribe by rounding plus exactly the terms dscribe skips
    assert np.all(np.abs(ours - dense) <= COEFFICIENT_RTOL * scale + np.abs(full - skipped))


def test_compiled_kernels_equal_python_oracles():
    atoms = _jiggled(molecule("CH3SH"), 3)
    soap = _soap()
    constants = sg.gto_constants(4.0, 4, 3, 0.25)
    species = np.searchsorted([1, 6, 16, 79], atoms.numbers)
    for weighting in [None, WEIGHTINGS[0]]:
        a = sg.soap_expansion(atoms.positions, species, 4, constants, weighting=weighting)
        b = sg.soap_expansion(atoms.positions, species, 4, constants, weighting=weighting,
                              compiled=False)
        for key in a:
            # numba's exp and numpy's differ in the last bit; a sum of ≤ n_neighbours · n_max
            # such terms (≤ 100 here) then differs by ≤ 100 u of the largest
            np.testing.assert_allclose(a[key], b[key], rtol=0,
                                       atol=gamma(100) * np.abs(b[key]).max())
    a = sg.soap_expansion(atoms.positions, species, 4, constants)
    ca, aa, da = sg.sparse_soap_derivatives(a, constants)
    cb, ab, db = sg.sparse_soap_derivatives(a, constants, compiled=False)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(aa, ab)
    np.testing.assert_array_equal(da, db)
    X, centre, atom, dX = soap.sparse_derivatives(atoms)
    np.testing.assert_array_equal(centre, ca)
    np.testing.assert_array_equal(dX, da)


def test_atoms_exactly_at_the_padded_cutoff():
    soap = _soap()
    cutoff = 4.0 + soap.descriptor_.get_cutoff_padding()
    for x, inside in [(cutoff, True), (np.nextafter(cutoff, np.inf), False)]:
        dimer = Atoms("AuS", positions=[[0.0, 0.0, 0.0], [x, 0.0, 0.0]])
        assert (x * x <= cutoff * cutoff) == inside
        _, centre, atom, dX = soap.sparse_derivatives(dimer)
        _, dense = soap.derivatives(dimer)
        assert len(centre) == (4 if inside else 2)
        assert (np.abs(dense[0, 1]).max() > 0) == inside
        scale = _centre_scale(dense)
        ex, constants = _expansion(soap, dimer)
        full, _ = _reference(ex, constants, skip=False)
        skipped, _ = _reference(ex, constants, skip=True)
        ours = _scatter(centre, atom, dX, 2)
        assert np.all(np.abs(ours - dense) <= COEFFICIENT_RTOL * scale + np.abs(full - skipped))


def test_element_missing_from_a_neighbourhood_keeps_the_channels():
    # CH4 and an AuS dimer 12 Å apart: each sees only its own elements, the descriptor's
    # channels stay those of all four species (the values are checked against dscribe above)
    atoms = STRUCTURES["apart"]()
    soap = _soap()
    X, centre, atom, dX = soap.sparse_derivatives(atoms)
    organic = np.isin(atoms.numbers, [1, 6])
    assert not np.any(organic[centre] != organic[atom])  # no pair across the gap
    for pair, seen_by in [(("S", "Au"), ~organic), (("Au", "Au"), ~organic),
                          (("H", "C"), organic), (("C", "C"), organic),
                          (("H", "S"), None), (("C", "Au"), None)]:
        sl = soap.descriptor_.get_location(pair)
        blind = np.ones(len(atoms), bool) if seen_by is None else ~seen_by
        assert np.all(X[blind][:, sl] == 0) and np.all(dX[blind[centre]][:, :, sl] == 0)
        if seen_by is not None:
            assert (X[seen_by][:, sl] != 0).any(axis=1).all()
            assert np.any(dX[seen_by[centre]][:, :, sl] != 0)
    methane = STRUCTURES["methane"]()
    X, centre, atom, dX = soap.sparse_derivatives(methane)
    for pair in [("S", "S"), ("Au", "Au"), ("H", "Au"), ("C", "S")]:
        sl = soap.descriptor_.get_location(pair)
        assert np.all(X[:, sl] == 0) and np.all(dX[:, :, sl] == 0)


def _central_difference(soap, atoms, j, a, h):
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[j, a] += h
    minus.positions[j, a] -= h
    return (soap.transform(AtomicEnvironments([plus]))
            - soap.transform(AtomicEnvironments([minus]))) / (2 * h)


def _richardson(soap, atoms, j, a, h=1e-3):
    """Central differences at h and h/2 extrapolated: error O(h⁴) (h⁴ · |∂⁵X| / 480)."""
    d1 = _central_difference(soap, atoms, j, a, h)
    d2 = _central_difference(soap, atoms, j, a, h / 2)
    return (4 * d2 - d1) / 3


def _assert_matches_differences(soap, atoms, coordinates):
    X, centre, atom, dX = soap.sparse_derivatives(atoms)
    full = _scatter(centre, atom, dX, len(atoms))
    for j, a in coordinates:
        fd = _richardson(soap, atoms, j, a)
        # Gaussians of width σ: the fifth derivative is ~|X|/σ⁵, so h = 1e-3 Å gives
        # h⁴/480/σ⁵ ≈ 2e-12/σ⁵ (2e-9 at σ = 0.25) of the scale; rounding 1e-16/h ≈ 1e-13
        scale = np.abs(full[:, j, a]).max()
        bound = 1e-3**4 / 480 / soap.sigma**5 * max(np.abs(X).max(), scale) * 100
        np.testing.assert_allclose(full[:, j, a], fd, rtol=0, atol=bound)


def test_finite_differences():
    ring = STRUCTURES["ring4"]()
    _assert_matches_differences(_soap(), ring, [(0, 0), (5, 2), (len(ring) - 1, 1)])


def _periodic_structure(pbc=True):
    cell = np.array([[4.6, 0.0, 0.0], [1.0, 4.4, 0.0], [0.5, 0.7, 4.8]])
    positions = [[0.2, 0.3, 0.1], [2.4, 0.5, 0.4], [1.0, 2.7, 2.2], [3.3, 2.9, 3.6],
                 [4.1, 4.5, 1.9]]
    return Atoms("AuSCHH", positions=positions, cell=cell, pbc=pbc)


def _cluster_oracle(soap, atoms):
    """dscribe's dense analytic derivatives of the centres in a cluster of images, summed.

    A periodic structure's SOAP is that of its atoms inside a large enough
    finite cluster of images; moving atom j moves all its images, so the
    derivative is the sum over them.
    """
    n = len(atoms)
    cutoff = float(soap.r_cut) + soap.descriptor_.get_cutoff_padding()
    cell = np.asarray(atoms.cell)
    heights = np.abs(np.linalg.det(cell)) / np.linalg.norm(
        np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    k = [int(np.ceil(cutoff / h)) + 1 if p else 0 for h, p in zip(heights, atoms.pbc, strict=True)]
    shifts = [np.array([a, b, c]) @ cell for a in range(-k[0], k[0] + 1)
              for b in range(-k[1], k[1] + 1) for c in range(-k[2], k[2] + 1)]
    shifts.sort(key=lambda s: float(s @ s))  # the zero shift first: the centres
    cluster = Atoms(np.tile(atoms.numbers, len(shifts)),
                    positions=np.concatenate([atoms.positions + s for s in shifts]))
    plain = DscribeSOAP(species=SPECIES, r_cut=float(soap.r_cut), n_max=soap.n_max,
                        l_max=soap.l_max, sigma=float(soap.sigma))
    d, X = plain.derivatives(cluster, centers=list(range(n)), attach=True, method="analytical")
    return X, d.reshape(n, len(shifts), n, 3, -1).sum(axis=1)


@pytest.mark.parametrize("pbc", [True, (True, False, True)])
def test_periodic_equals_a_cluster_of_images(pbc):
    atoms = _periodic_structure(pbc)
    soap = _soap(periodic=True)
    X, centre, atom, dX = soap.sparse_derivatives(atoms)
    np.testing.assert_array_equal(X, soap.transform(AtomicEnvironments([atoms])))
    X_cluster, dense = _cluster_oracle(soap, atoms)
    np.testing.assert_allclose(X, X_cluster, rtol=0, atol=COEFFICIENT_RTOL * np.abs(X).max())
    ex, constants = _expansion(soap, atoms)
    full, _ = _reference(ex, constants, skip=False)
    skipped, _ = _reference(ex, constants, skip=True)
    ours = _scatter(centre, atom, dX, len(atoms))
    scale = _centre_scale(dense)
    assert np.all(np.abs(ours - dense) <= COEFFICIENT_RTOL * scale + np.abs(full - skipped))
    # the cell is smaller than the cutoff: atoms see their own images
    i, j, _ = sg.neighbour_pairs(atoms.positions, constants["cutoff"], np.asarray(atoms.cell),
                                 np.asarray(atoms.pbc))
    assert np.any(i == j)


def test_periodic_finite_differences():
    atoms = _periodic_structure()
    _assert_matches_differences(_soap(periodic=True), atoms, [(0, 1), (3, 2)])


def test_periodic_flag_needs_pbc():
    # periodic=True on a structure with a cell but no pbc is the finite structure, as in dscribe
    ring = STRUCTURES["ring4"]()
    ring.cell = [6.0, 7.0, 8.0]  # smaller than the ring: images would be within the cutoff
    a = _soap(periodic=True).sparse_derivatives(ring)
    b = _soap().sparse_derivatives(ring)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_polynomial_basis_raises():
    soap = _soap(rbf="polynomial")
    with pytest.raises(ValueError, match="rbf='polynomial'"):
        soap.sparse_derivatives(molecule("CH4"))
    with pytest.raises(ValueError, match="rbf='polynomial'"):
        soap.pullback(molecule("CH4"))


WEIGHTINGS = [
    {"function": "poly", "r0": 4.0, "c": 1.0, "m": 2.0},
    {"function": "poly", "r0": 3.5, "c": 2.0, "m": 3.0, "w0": 0.0},
    {"function": "pow", "r0": 2.0, "c": 1.0, "d": 1.0, "m": 3.0},
    {"function": "exp", "r0": 1.0, "c": 1.0, "d": 0.5},
    {"w0": 0.3},
]


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_weighted_equals_dscribe_numerical_and_finite_differences(weighting):
    # dscribe has no analytic derivatives with a weighting: its numerical ones (central
    # differences, h = 1e-4 Å, error h²/6 |∂³X| ≈ h²/6 (3/σ)² |∂X| ≈ 2.4e-7 of the scale at
    # σ = 0.25 Å) and our own extrapolated differences are the oracles
    ring = STRUCTURES["ring4"]()
    soap = _soap(weighting=weighting)
    X, centre, atom, dX = soap.sparse_derivatives(ring)
    np.testing.assert_array_equal(X, soap.transform(AtomicEnvironments([ring])))
    numerical, _ = soap.descriptor_.derivatives(ring, attach=True, method="numerical")
    ours = _scatter(centre, atom, dX, len(ring))
    scale = _centre_scale(numerical)
    assert np.all(np.abs(ours - numerical) <= 1e-4**2 / 6 * (3 / 0.25) ** 2 * scale)
    _assert_matches_differences(soap, ring, [(1, 0), (10, 2)])


def test_poly_weighting_makes_the_cutoff_smooth():
    cutoff = 4.0 + _soap().descriptor_.get_cutoff_padding()

    def rows(soap, x):
        dimer = Atoms("AuS", positions=[[0.0, 0.0, 0.0], [x, 0.0, 0.0]])
        return soap.sparse_derivatives(dimer)

    inside, outside = np.nextafter(cutoff, 0), np.nextafter(cutoff, np.inf)
    plain = _soap()
    jump = np.abs(rows(plain, inside)[0] - rows(plain, outside)[0]).max()
    assert jump > 1e-6  # dscribe's Gaussian tail is cut off at r_cut + padding
    smooth = _soap(weighting={"function": "poly", "r0": 4.0, "c": 1.0, "m": 2.0})
    X_in, centre, atom, dX_in = rows(smooth, inside)
    X_out, *_ = rows(smooth, outside)
    np.testing.assert_array_equal(X_in, X_out)
    assert np.all(dX_in == 0)  # beyond r0 nothing moves the features
    # at r0 itself the features and their gradient are continuous
    X_a, _, _, d_a = rows(smooth, np.nextafter(4.0, 0))
    X_b, _, _, d_b = rows(smooth, np.nextafter(4.0, np.inf))
    assert np.abs(X_a - X_b).max() <= 1e-15 * np.abs(X_a).max()
    assert np.abs(d_a).max() <= 1e-12 * np.abs(rows(smooth, 3.0)[3]).max()
    assert np.all(d_b == 0)


def test_unknown_element_raises():
    soap = SOAP(species=["H", "C"], r_cut=3.0, n_max=2, l_max=1).fit([molecule("CH4")])
    with pytest.raises(ValueError, match="contains S"):
        soap.sparse_derivatives(molecule("CH3SH"))


@pytest.mark.parametrize("name", ["ring4", "apart"])
def test_pullback_equals_contracted_derivatives(name):
    atoms = STRUCTURES[name]()
    soap = _soap()
    n = len(atoms)
    G = np.random.default_rng(5).normal(size=(n, soap.n_features_out_))
    X, pullback = soap.pullback(atoms)
    np.testing.assert_array_equal(X, soap.transform(AtomicEnvironments([atoms])))
    got = pullback(G)
    _, centre, atom, dX = soap.sparse_derivatives(atoms)
    expected = np.zeros((n, 3))
    np.add.at(expected, atom, np.einsum("paf,pf->pa", dX, G[centre]))
    # both sum the same products c·∂c·G·prel in other orders: bounded by the sum of magnitudes
    ex, constants = _expansion(soap, atoms)
    _, T = _reference(ex, constants, skip=False)  # (centre, atom, 3, F)
    magnitude = np.einsum("ijaf,if->ja", T, np.abs(G))
    k = soap.n_features_out_ * 2 * (2 * soap.l_max + 1) + n + 2
    assert np.all(np.abs(got - expected) <= gamma(k) * magnitude)
    np.testing.assert_array_equal(pullback(G), got)  # callable again, same result


def test_pullback_compiled_equals_python_and_checks_shape():
    atoms = _jiggled(molecule("CH3SH"), 6)
    constants = sg.gto_constants(4.0, 4, 3, 0.25)
    ex = sg.soap_expansion(atoms.positions, np.searchsorted([1, 6, 16, 79], atoms.numbers), 4,
                           constants)
    G = np.random.default_rng(7).normal(size=(len(atoms), 544))
    G[2] = 0.0  # a centre without gradient
    np.testing.assert_array_equal(sg.soap_pullback(ex, constants, G),
                                  sg.soap_pullback(ex, constants, G, compiled=False))
    with pytest.raises(ValueError, match=r"G has shape \(5, 544\); expected .* \(6, 544\)"):
        sg.soap_pullback(ex, constants, G[:-1])


@pytest.mark.parametrize("periodic", [False, True])
def test_pullback_finite_differences(periodic):
    atoms = _periodic_structure() if periodic else STRUCTURES["ring4"]()
    soap = _soap(periodic=periodic)
    G = np.random.default_rng(8).normal(size=(len(atoms), soap.n_features_out_))
    X, pullback = soap.pullback(atoms)
    got = pullback(G)
    for j, a in [(0, 0), (3, 2)]:
        fd = np.einsum("if,if->", G, _richardson(soap, atoms, j, a))
        # Richardson's error as in _assert_matches_differences, summed with weights |G|
        bound = 1e-3**4 / 480 / soap.sigma**5 * np.abs(X).max() * 100 * np.abs(G).sum()
        assert abs(got[j, a] - fd) <= bound
