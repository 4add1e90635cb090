"""Paper IV's gold-thiolate alignment rules, and the OAMLM's equivariance with both strategies."""

import functools
import itertools

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("numba")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from mlmlearn.atoms import SOAP, AtomicEnvironments  # noqa: E402
from mlmlearn.datasets import load_au25, load_gold_thiolate_rings  # noqa: E402
from mlmlearn.oamlm import (  # noqa: E402
    OAMLM,
    GoldThiolateAlignment,
    MissingNeighborsError,
    PermutationAlignment,
)
from mlmlearn.oamlm._gold_thiolate import (  # noqa: E402
    CORE,
    CORE_S,
    GoldThiolateNeighborhoods,
)
from mlmlearn.oamlm._superpose import kabsch  # noqa: E402


@pytest.fixture(scope="module")
def rings():
    data = load_gold_thiolate_rings()
    # not frame 0 of a run: the ideal built rings are symmetric, so two orderings fit exactly
    return [
        f
        for f, r, s in zip(data.frames, data.run, data.step, strict=True)
        if data.run_names[r].endswith("600K") and s > 0
    ][::20]


@pytest.fixture(scope="module")
def au25_hot():
    return load_au25().frames[200::100]


def _rotate(P, rotation):
    return GoldThiolateNeighborhoods(P.points @ rotation.T, P.count, P.kind)


@pytest.mark.parametrize(
    "types, n_points",
    [(["H"], 4), (["C"], 5), (["S"], 4), (["Au_unit", "Au_half_unit"], 7)],
)
def test_rules_pick_the_chemical_partners_and_recover_rotations(rings, types, n_points):
    env = AtomicEnvironments(rings, atom_types=types)
    alignment = GoldThiolateAlignment()
    P = alignment.neighborhoods(env)
    assert np.all(P.count == n_points)
    # partners are at bonding distances: C–H ≈ 1.1, S–C ≈ 1.8, Au–S ≈ 2.3 Å
    first = np.linalg.norm(P.points[:, 1], axis=1)
    assert np.all((first > 0.9) & (first < 2.6))
    rotation = Rotation.random(random_state=len(types) + n_points).as_matrix()
    R, g = alignment.align(_rotate(P[:12], rotation), P[:12])
    np.testing.assert_allclose(
        R[np.arange(12), np.arange(12)], np.broadcast_to(rotation, (12, 3, 3)), atol=1e-9
    )
    assert g.diagonal().max() < 1e-9
    assert np.all(g >= 0)


def test_orderings_are_the_rules_permutations(rings):
    """A hydrogen whose two partner H are swapped still aligns exactly (2 orderings)."""
    env = AtomicEnvironments(rings[:3], species="H")
    alignment = GoldThiolateAlignment()
    P = alignment.neighborhoods(env)
    swapped = GoldThiolateNeighborhoods(P.points[:, [0, 1, 3, 2, *range(4, 13)]], P.count, P.kind)
    _, g = alignment.align(swapped, P)
    assert g.diagonal().max() < 1e-9


def test_core_gold_rule_against_a_brute_force_oracle(au25_hot):
    env = AtomicEnvironments(au25_hot, atom_types=["Au_core"])
    alignment = GoldThiolateAlignment(n_triangles=10)
    P = alignment.neighborhoods(env)
    assert set(np.unique(P.kind)) == {CORE, CORE_S}
    assert np.all(P.count <= 13)
    inputs, references = P[::5][:8], P[1::7][:8]
    R, g = alignment.align(inputs, references)
    for i in range(len(inputs)):
        for j in range(len(references)):
            g_oracle = _core_oracle(inputs[i : i + 1], references[j : j + 1], 10)
            assert g[i, j] == pytest.approx(g_oracle, abs=1e-9)
    # rotated copies (hot frames: no symmetric, collinear triangles) come back exactly
    rotation = Rotation.random(random_state=4).as_matrix()
    R, g = alignment.align(_rotate(P[:10], rotation), P[:10])
    np.testing.assert_allclose(
        R[np.arange(10), np.arange(10)], np.broadcast_to(rotation, (10, 3, 3)), atol=1e-8
    )
    assert g.diagonal().max() < 1e-9


def _core_oracle(P, S, n_triangles):
    """Paper IV's core-gold alignment spelled out with the SVD oracle."""
    y, ny, y_s = P.points[0], P.count[0], P.kind[0] == CORE_S
    x, nx, x_s = S.points[0], S.count[0], S.kind[0] == CORE_S

    def nn_accuracy(R):
        xr = x[1:nx] @ R.T
        yy = y[1:ny]
        d = np.linalg.norm(xr[:, None] - yy[None], axis=2)
        nearest = d.min(axis=1) if nx >= ny else d.min(axis=0)
        return np.sqrt((nearest**2).sum()) / max(nx, ny)

    if y_s and x_s:
        target = y[[0, 1, 2]]
        triples = [[0, 1, m] for m in range(2, nx)]
    else:
        a = 2 if y_s else 1
        target = y[[0, a, a + 1]]
        first = 2 if x_s else 1
        pairs = list(itertools.permutations(range(first, nx), 2))

        def triangle(p, q):
            la, lb, lc = np.linalg.norm(p), np.linalg.norm(q), np.linalg.norm(p - q)
            t0 = np.arccos(np.clip(p @ q / (la * lb), -1, 1))
            t1 = np.arccos(np.clip((la**2 + lc**2 - lb**2) / (2 * la * lc), -1, 1))
            return np.array([la, lb, lc, t0, t1, np.pi - t0 - t1])

        t_in = triangle(target[1], target[2])
        u = [np.sum((triangle(x[p], x[q]) - t_in) ** 2) for p, q in pairs]
        chosen = np.argsort(u, kind="stable")[:n_triangles]
        triples = [[0, *pairs[c]] for c in chosen]
    return min(nn_accuracy(kabsch(x[t][None], target[None])[0][0]) for t in triples)


def test_missing_partner_names_atom_and_rule():
    from ase import Atoms

    # a methanethiolate on two gold atoms, with its carbon taken away
    atoms = Atoms("Au2S", positions=[[-1.5, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.6, 0.0]])
    env = AtomicEnvironments(atoms, species="S")
    with pytest.raises(
        MissingNeighborsError, match=r"atom 2 \(S\) of structure 0: 0 C .*sulfur rule"
    ):
        GoldThiolateAlignment().neighborhoods(env)


def test_families_are_not_mixed(rings):
    alignment = GoldThiolateAlignment()
    h = alignment.neighborhoods(AtomicEnvironments(rings[:1], species="H"))
    c = alignment.neighborhoods(AtomicEnvironments(rings[:1], species="C"))
    with pytest.raises(ValueError, match=r"one atom family per model; got \['C', 'H'\]"):
        alignment.align(h, c)


# ----------------------------------------------------------------- equivariance
def _descriptor():
    return make_pipeline(SOAP(n_max=3, l_max=2, r_cut=4.0, sigma=0.5), MinMaxScaler())


def _rotated(frames, rotation, shift):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for a in frames:
        b = a.copy()
        b.positions = a.positions @ rotation.T + shift
        b.calc = SinglePointCalculator(b, forces=a.get_forces() @ rotation.T)
        out.append(b)
    return out


@pytest.fixture(scope="module")
def models(rings):
    out = {}
    for name, alignment, species in [
        ("gold", GoldThiolateAlignment(), "S"),
        ("permutation", PermutationAlignment(3), "S"),
    ]:
        train = AtomicEnvironments(rings[:12], species=species)
        for loss in ("analytic", "numeric"):
            model = OAMLM(_descriptor(), alignment=alignment, references=25, loss=loss)
            out[name, loss] = model.fit(train, train.forces)
    test = rings[12:15]
    return (
        out,
        test,
        {key: m.predict(AtomicEnvironments(test, species="S")) for key, m in out.items()},
    )


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_rotating_a_structure_rotates_every_prediction(models, seed):
    fitted, test, reference = models
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(random_state=seed).as_matrix()
    moved = AtomicEnvironments(_rotated(test, rotation, rng.normal(scale=5.0, size=3)), species="S")
    for key, model in fitted.items():
        v = model.predict(moved)
        expected = reference[key] @ rotation.T
        angle = np.arccos(np.clip((v * expected).sum(axis=1), -1.0, 1.0))
        # closed forms (analytic) and the numeric loss polished to its local minimum:
        # equal up to the rounding of the rotated inputs (arccos resolves ~1.5e-8 rad)
        assert angle.max() <= 1e-6, key


def test_atom_order_does_not_matter(models):
    fitted, test, reference = models
    order = np.random.default_rng(1).permutation(len(test[0]))
    permuted = [a[order] for a in test]
    env = AtomicEnvironments(permuted, species="S")
    # rows of the permuted environments, mapped back to the original sulfur order
    rows = []
    for k, a in enumerate(test):
        sulfur = np.flatnonzero(a.numbers == 16)
        original = np.searchsorted(sulfur, [c for c in order if a.numbers[c] == 16])
        rows.extend(k * len(sulfur) + original)
    for key, model in fitted.items():
        np.testing.assert_allclose(
            model.predict(env), reference[key][rows], atol=1e-6, err_msg=str(key)
        )


@pytest.mark.parametrize(
    "estimator",
    [
        OAMLM(_descriptor()),
        OAMLM(_descriptor(), alignment=GoldThiolateAlignment(), loss="numeric", epsilon=1.2),
        PermutationAlignment(),
        GoldThiolateAlignment(),
    ],
    ids=["OAMLM", "OAMLM-gold", "PermutationAlignment", "GoldThiolateAlignment"],
)
def test_scikit_learn_parameter_conventions(estimator):
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
    )

    name = type(estimator).__name__
    check_no_attributes_set_in_init(name, estimator)
    check_parameters_default_constructible(name, estimator)
    check_get_params_invariance(name, estimator)
    assert clone(estimator).get_params(deep=False).keys() == estimator.get_params(deep=False).keys()


def test_invalid_parameters_name_themselves(rings):
    train = AtomicEnvironments(rings[:3], species="S")
    with pytest.raises(ValueError, match="'loss' parameter"):
        OAMLM(_descriptor(), loss="cosine").fit(train, train.forces)
    with pytest.raises(ValueError, match="'sigma2' parameter"):
        OAMLM(_descriptor(), sigma2=0.0).fit(train, train.forces)
    with pytest.raises(ValueError, match="'accuracy' parameter of GoldThiolateAlignment"):
        OAMLM(_descriptor(), alignment=GoldThiolateAlignment(accuracy="median"), references=5).fit(
            train, train.forces
        )
    with pytest.raises(ValueError, match="too few samples for the references"):
        OAMLM(_descriptor(), references=100).fit(train, train.forces)


# ------------------------------------------------------------------ periodic cells
#: Positions on a grid of 2⁻³⁰ Å: sums and differences of such numbers below 2²² Å in
#: magnitude are exact in float64, as are integer multiples of an integer cell length.
_GRID = 2.0**-30


def _on_the_grid(atoms):
    """A copy with positions rounded to the grid (moves each atom by < 5e-10 Å)."""
    out = atoms.copy()
    out.positions = np.rint(atoms.positions / _GRID) * _GRID
    return out


def _in_a_periodic_box(atoms, margin=12.0):
    """``atoms`` (on the grid) in a cubic periodic box, wrapped so that it straddles every
    face, by exact arithmetic: an integer box length, a grid shift and wrapping by whole
    box lengths, so every neighbour vector x_j − x_i + n·L is computed exactly and equals
    the free cluster's x_j − x_i bit for bit."""
    box = atoms.copy()
    size = np.ceil(np.ptp(atoms.positions, axis=0).max() + margin)  # no image within 2 × 5 Å
    box.cell = np.eye(3) * size
    box.pbc = True
    shifted = atoms.positions - np.rint(atoms.positions.mean(axis=0) / _GRID) * _GRID
    box.positions = shifted - size * np.floor(shifted / size)  # centred on a cell corner
    assert np.ptp(box.positions, axis=0).min() > 0.5 * size  # really split across the faces
    return box


@pytest.mark.parametrize(
    "alignment, selection",
    [
        (GoldThiolateAlignment(), {"species": "H"}),
        (GoldThiolateAlignment(), {"species": "C"}),
        (GoldThiolateAlignment(), {"species": "S"}),
        (GoldThiolateAlignment(), {"atom_types": "Au_unit"}),
        (GoldThiolateAlignment(n_core_neighbors=8), {"atom_types": "Au_core"}),
        (PermutationAlignment(4), {"species": "Au"}),
    ],
    ids=["gold-H", "gold-C", "gold-S", "gold-unit", "gold-core", "permutation"],
)
def test_a_cluster_in_a_periodic_box_aligns_as_the_free_cluster(au25_hot, alignment, selection):
    """Neighbour vectors cross the cell faces (minimum image through the neighbour list).

    The box is built by exact arithmetic (:func:`_in_a_periodic_box`), so the neighbour
    vectors, and with them the alignments, are those of the free cluster bit for bit:
    any difference is a neighbour found through the wrong image or computed another way.
    """
    frames = [_on_the_grid(a) for a in au25_hot[:2]]
    free = AtomicEnvironments(frames, **selection)
    boxed = AtomicEnvironments([_in_a_periodic_box(a) for a in frames], **selection)
    np.testing.assert_array_equal(boxed.atom_types, free.atom_types)
    P_free, P_boxed = alignment.neighborhoods(free), alignment.neighborhoods(boxed)
    points = lambda P: P.points if hasattr(P, "points") else P  # noqa: E731
    np.testing.assert_array_equal(points(P_boxed), points(P_free))
    if hasattr(P_free, "kind"):
        np.testing.assert_array_equal(P_boxed.kind, P_free.kind)
        np.testing.assert_array_equal(P_boxed.count, P_free.count)
    references = P_free[::3]
    R_free, g_free = alignment.align(P_free, references)
    R_boxed, g_boxed = alignment.align(P_boxed, references)
    np.testing.assert_array_equal(g_boxed, g_free)
    np.testing.assert_array_equal(R_boxed, R_free)


def test_gold_rules_in_a_small_periodic_cell_use_the_images():
    """A methanethiolate chain whose partners exist only as periodic images."""
    from ase import Atoms

    # Au–S–Au–S… along x with period 2 × 2.4 Å: each S has its two Au as images
    chain = Atoms(
        "AuSCH3",
        positions=[
            [0.0, 0.0, 0.0],
            [2.4, 0.0, 1.0],
            [2.4, 0.0, 2.82],
            [2.4, 1.03, 3.18],
            [3.29, -0.51, 3.18],
            [1.51, -0.51, 3.18],
        ],
        cell=[4.8, 10.0, 10.0],
        pbc=[True, False, False],
    )
    env = AtomicEnvironments(chain, species="S")
    P = GoldThiolateAlignment().neighborhoods(env)
    gold = P.points[0, 2:4]  # the two Au partners: the atom at the origin and its image
    np.testing.assert_allclose(np.sort(gold[:, 0]), [-2.4, 2.4], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(gold, axis=1), np.hypot(2.4, 1.0), rtol=1e-12)
    unit = AtomicEnvironments(chain, atom_types="Au_unit")
    P = GoldThiolateAlignment().neighborhoods(unit)
    assert P.count[0] == 7
    # the Au on each S other than the centre is the centre's own image, 4.8 Å away
    np.testing.assert_allclose(np.linalg.norm(P.points[0, [3, 6]], axis=1), 4.8, rtol=1e-12)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "alignment, parameter",
    [
        (GoldThiolateAlignment(bond_cutoff=-1.0), "bond_cutoff"),
        (GoldThiolateAlignment(partner_cutoff="4"), "partner_cutoff"),
        (GoldThiolateAlignment(n_core_neighbors=13), "n_core_neighbors"),
        (GoldThiolateAlignment(n_triangles=0), "n_triangles"),
        (GoldThiolateAlignment(accuracy="median"), "accuracy"),
        (PermutationAlignment(1), "n_neighbors"),
        (PermutationAlignment(cutoff=0.0), "cutoff"),
        (PermutationAlignment(accuracy="max"), "accuracy"),
    ],
)
def test_alignment_parameters_are_validated_in_every_public_method(rings, alignment, parameter):
    from sklearn.utils._param_validation import InvalidParameterError

    env = AtomicEnvironments(rings[:1], species="S")
    name = type(alignment).__name__
    match = f"'{parameter}' parameter of {name}"
    with pytest.raises(InvalidParameterError, match=match):
        alignment.neighborhoods(env)
    P = type(alignment)().neighborhoods(env)
    with pytest.raises(InvalidParameterError, match=match):
        alignment.align(P, P)


def test_compiled_core_rule_equals_its_pure_python_loop(au25_hot):
    from mlmlearn.oamlm import _gold_thiolate

    P = GoldThiolateAlignment().neighborhoods(
        AtomicEnvironments(au25_hot[:1], atom_types="Au_core")
    )[:3]
    S = P[::-1]
    R, g = _gold_thiolate._align_core(P, S, 10)
    R_py, g_py = np.empty_like(R), np.empty_like(g)
    # pure Python, with the pure-Python helpers
    args = (P.points, P.count, P.kind == CORE_S, S.points, S.count, S.kind == CORE_S, 10)
    _gold_thiolate._core_py(*args, R_py, g_py)
    # the same IEEE-754 double operations in the same order: numba compiles without
    # fastmath (no reassociation, no contraction into fused multiply-adds) and its sqrt
    # is correctly rounded, as numpy's is, so the two agree to the last bit (a collinear
    # triangle would send QCP to its LAPACK fallback, where numpy's and numba's LAPACK
    # builds may round differently; these triangles are not collinear)
    np.testing.assert_array_equal(g, g_py)
    np.testing.assert_array_equal(R, R_py)
    assert _gold_thiolate._rotation is _gold_thiolate._rotation_py


# ------------------------------------------ the fast loops against the plain ones, bit for bit
def _plain_best_alignments(P, S, orders, rss, *, ties=True):
    """The alignment loop as first written: every point, residuals computed twice.

    With ``ties`` the tie rule spelled out: every ordering's accuracy, QCP's p'(λ̂)
    and rotation, the bound E_b of the first best (the module's ``_accuracy_bound_py``,
    the rule's definition), and the mean of the rotations within 2E_b. Without, the
    single best ordering: the alignment as it was before ties counted.
    """
    from mlmlearn.oamlm._superpose import _accuracy_bound_py, _rotation_py, _superpose_py

    n_points = P.shape[1]
    centre = bool(np.all(P[:, 0] == 0) and np.all(S[:, 0] == 0) and np.all(orders[:, 0] == 0))
    R = np.empty((len(P), len(S), 3, 3))
    g = np.empty((len(P), len(S)))
    n_tied = np.ones((len(P), len(S)), dtype=int)
    R_try = np.empty((3, 3))

    def norms(points):  # Σ|p|² and Σ|p| as the kernel sums them (a centre adds zeros)
        sq = total = 0.0
        for m in range(int(centre), n_points):
            r2 = points[m, 0] ** 2 + points[m, 1] ** 2 + points[m, 2] ** 2
            sq += r2
            total += np.sqrt(r2)
        return sq, total

    for i, y in enumerate(P):
        sq_y, sum_y = norms(y)
        for j, x in enumerate(S):
            sq_x, sum_x = norms(x)
            accs, dps, rotations = [], [], []
            for order in orders:
                msd = _superpose_py(x, y, order, 1e-12, 50, R_try)
                dps.append(_rotation_py(x, y, order, 0, 1e-12, 50, np.empty((3, 3))))
                rotations.append(R_try.copy())
                if rss:
                    acc = np.sqrt(msd) / n_points
                else:
                    acc = 0.0
                    for m in range(n_points):
                        xm = x[order[m]]
                        d2 = 0.0
                        for a in range(3):
                            d = R_try[a, 0] * xm[0] + R_try[a, 1] * xm[1] + R_try[a, 2] * xm[2]
                            d -= y[m, a]
                            d2 += d * d
                        acc += np.sqrt(d2)
                    acc /= n_points
                accs.append(acc)
            b = int(np.argmin(accs))  # the first of least accuracy
            g[i, j] = accs[b]
            R[i, j] = rotations[b]
            if not ties:
                continue
            e = _accuracy_bound_py(0.5 * (sq_x + sq_y), dps[b], 1e-12, sum_x, sum_y, n_points,
                                   n_points - int(centre), accs[b])
            tied = [o for o in range(len(orders)) if accs[o] - accs[b] <= 2 * e]
            n_tied[i, j] = len(tied)
            if len(tied) > 1:
                total = np.zeros((3, 3))
                for o in tied:
                    total += rotations[o]
                R[i, j] = total / len(tied)
    return R, g, n_tied


@pytest.mark.parametrize("species", ["H", "C"])
@pytest.mark.parametrize("rss", [False, True])
@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_alignment_loop_skips_the_centre_without_changing_a_bit(rings, species, rss, shift):
    """The compiled loop leaves out a centre at the origin (exact zeros in every sum).

    Against the plain loop over every point: equal to the last bit with the centre at
    the origin (the skip taken) and with every point shifted (the skip not taken).
    """
    from mlmlearn.oamlm._gold_thiolate import _ORDERS, C, H
    from mlmlearn.oamlm._superpose import best_alignments

    P = GoldThiolateAlignment().neighborhoods(AtomicEnvironments(rings[:2], species=species))
    m = int(P.count[0])
    points = P.points[:, :m] + shift
    orders = _ORDERS[H if species == "H" else C]
    inputs, references = points[:4], points[3:9]
    R, g, _, _, n_tied = best_alignments(inputs, references, orders, rss=rss, return_ties=True)
    R_plain, g_plain, _ = _plain_best_alignments(inputs, references, orders, rss)
    np.testing.assert_array_equal(g, g_plain)
    np.testing.assert_array_equal(R, R_plain)
    # MD frames: no ties, and every result is the alignment's before ties counted
    assert np.all(n_tied == 1)
    R_before, g_before, _ = _plain_best_alignments(inputs, references, orders, rss, ties=False)
    np.testing.assert_array_equal(R, R_before)
    np.testing.assert_array_equal(g, g_before)


@pytest.mark.parametrize("n_gold", [4, 5, 6])
@pytest.mark.parametrize("rss", [False, True])
def test_alignment_loop_with_ties_equals_the_plain_loop(n_gold, rss):
    """The built rings tie (a methyl's H, a unit gold's blocks): the compiled loop is the
    tie rule spelled out, to the last bit."""
    from mlmlearn.datasets import gold_thiolate_ring
    from mlmlearn.oamlm._gold_thiolate import _ORDERS, UNIT, C, H, S
    from mlmlearn.oamlm._superpose import best_alignments

    ring = gold_thiolate_ring(n_gold)
    found = 0
    for kind, types in [(H, ["H"]), (C, ["C"]), (S, ["S"]), (UNIT, ["Au_unit"])]:
        P = GoldThiolateAlignment().neighborhoods(AtomicEnvironments(ring, atom_types=types))
        m = int(P.count[0])
        points = P.points[:, :m]
        inputs = points @ Rotation.random(random_state=n_gold).as_matrix().T
        R, g, _, _, n_tied = best_alignments(inputs, points, _ORDERS[kind], rss=rss,
                                             return_ties=True)
        R_plain, g_plain, n_plain = _plain_best_alignments(inputs, points, _ORDERS[kind], rss)
        np.testing.assert_array_equal(n_tied, n_plain)
        np.testing.assert_array_equal(g, g_plain)
        np.testing.assert_array_equal(R, R_plain)
        found += int((n_tied > 1).sum())
    assert found > 0


def _plain_core(P, S, n_tri, *, ties=True):
    """The core-gold loop as first written: inputs outer, triangles per pair, every
    candidate's nearest-neighbour sum to the end, rotations over all three points.

    With ``ties`` the tie rules spelled out: the pairs left out of the ``n_tri`` of
    least u (2.33) whose u is within both triangles' rounding bounds of the last
    one's join the candidates (in loop order), and the rotations of the candidates
    within 2E_b of the best accuracy are averaged (the module's error bounds are the
    rules' definitions). Without, the single best candidate, as before ties counted.
    Also returns, per pair, how many candidates were averaged and the best one's κ.
    """
    from mlmlearn.oamlm._gold_thiolate import _G9, _nn_bound_py, _triangle_error_py, _triangle_py
    from mlmlearn.oamlm._superpose import _rotation_py, _superpose_py

    def nn_accuracy(x, nx, y, ny, R):
        total = 0.0
        big_is_x = nx >= ny
        n_big, n_small = (nx, ny) if big_is_x else (ny, nx)
        for p in range(1, n_big):
            best = np.inf
            for q in range(1, n_small):
                xp, yq = (x[p], y[q]) if big_is_x else (x[q], y[p])
                d = 0.0
                for a in range(3):
                    e = R[a, 0] * xp[0] + R[a, 1] * xp[1] + R[a, 2] * xp[2] - yq[a]
                    d += e * e
                best = min(best, d)
            total += best
        return np.sqrt(total) / n_big

    pc, ps, sc, ss = P.count, P.kind == CORE_S, S.count, S.kind == CORE_S
    R = np.empty((len(P), len(S), 3, 3))
    g = np.empty((len(P), len(S)))
    n_tied = np.ones((len(P), len(S)), dtype=int)
    kappa = np.empty((len(P), len(S)))
    R_try, tri0, tri = np.empty((3, 3)), np.empty(6), np.empty(6)
    for i, y in enumerate(P.points):
        for j, x in enumerate(S.points):
            if ps[i] and ss[j]:
                y3 = np.array([np.zeros(3), y[1], y[2]])
                triples = [(0, 1, m) for m in range(2, sc[j])]
            else:
                a0 = 2 if ps[i] else 1
                y3 = np.array([np.zeros(3), y[a0], y[a0 + 1]])
                _triangle_py(y3[1], y3[2], tri0)
                first = 2 if ss[j] else 1
                cands, errors = [], {}
                for p, q in itertools.permutations(range(first, sc[j]), 2):
                    _triangle_py(x[p], x[q], tri)
                    errors[p, q] = _triangle_error_py(tri)
                    cands.append((sum((tri[t] - tri0[t]) ** 2 for t in range(6)), p, q))
                ranked = sorted(cands, key=lambda c: c[0])  # stable: ties keep the loop order
                chosen = ranked[:n_tri]
                if ties and len(cands) > n_tri:
                    u_n, p_n, q_n = chosen[-1]
                    e_n = errors[p_n, q_n]
                    bound_n = 2 * np.sqrt(u_n) * e_n + e_n**2 + _G9 * u_n
                    listed = {(p, q) for _, p, q in chosen}
                    for u, p, q in cands:  # loop order
                        e = errors[p, q]
                        if (p, q) not in listed and (
                                u - u_n <= bound_n + 2 * np.sqrt(u) * e + e**2 + _G9 * u):
                            chosen.append((u, p, q))
                triples = [(0, p, q) for _, p, q in chosen]
            accs, rotations, dps = [], [], []
            for order in triples:
                _superpose_py(x, y3, np.array(order), 1e-12, 50, R_try)
                dps.append(_rotation_py(x, y3, np.array(order), 0, 1e-12, 50, np.empty((3, 3))))
                rotations.append(R_try.copy())
                accs.append(nn_accuracy(x, sc[j], y, pc[i], R_try))
            b = int(np.argmin(accs))
            g[i, j] = accs[b]
            R[i, j] = rotations[b]
            order_b = np.array(triples[b])
            lam = 0.5 * sum(x[order_b[m], a] ** 2 + y3[m, a] ** 2 for m in (1, 2) for a in range(3))
            kappa[i, j] = lam**3 / dps[b] if dps[b] > 0 else np.inf
            if not ties:
                continue
            x_max = max(np.sqrt(x[p, 0] ** 2 + x[p, 1] ** 2 + x[p, 2] ** 2)
                        for p in range(1, sc[j]))
            tau = 2 * _nn_bound_py(x, y3, order_b, dps[b], max(sc[j], pc[i]), x_max, accs[b])
            tied = [t for t in range(len(triples)) if accs[t] - accs[b] <= tau]
            n_tied[i, j] = len(tied)
            if len(tied) > 1:
                total = np.zeros((3, 3))
                for t in tied:
                    total += rotations[t]
                R[i, j] = total / len(tied)
    return R, g, n_tied, kappa


def test_core_gold_loop_equals_the_plain_loop_bit_for_bit(au25_hot):
    """References outer, triangles once per reference, candidates abandoned once their
    nearest-neighbour sum passes the best: not one bit of R or g changes."""
    from mlmlearn.oamlm._gold_thiolate import _align_core

    P = GoldThiolateAlignment().neighborhoods(AtomicEnvironments(au25_hot, atom_types="Au_core"))
    core, core_s = np.flatnonzero(P.kind == CORE), np.flatnonzero(P.kind == CORE_S)
    inputs = P[np.r_[core[:2], core_s[:3]]]
    references = P[np.r_[core[2:4], core_s[3:7]]]
    R, g = _align_core(inputs, references, 10)
    R_plain, g_plain, n_tied, _ = _plain_core(inputs, references, 10)
    np.testing.assert_array_equal(g, g_plain)
    np.testing.assert_array_equal(R, R_plain)
    # hot MD frames: no ties, and every result is the alignment's before ties counted
    assert np.all(n_tied == 1)
    R_before, g_before, _, _ = _plain_core(inputs, references, 10, ties=False)
    np.testing.assert_array_equal(R, R_before)
    np.testing.assert_array_equal(g, g_before)


# ------------------------------------------------- symmetric core gold and gold blocks
def _c3_core(with_sulfur):
    """A core-gold neighborhood with a threefold axis (z): two staggered rings of three
    Au and one Au on the axis, S (if any) on the axis too; rows by distance (Å)."""
    au = [(2.0 * np.cos(phi), 2.0 * np.sin(phi), 1.9) for phi in np.radians([0, 120, 240])]
    au += [(2.3 * np.cos(phi), 2.3 * np.sin(phi), -1.5) for phi in np.radians([60, 180, 300])]
    au += [(0.0, 0.0, -2.9)]
    au = np.array(au)
    au = au[np.argsort(np.linalg.norm(au, axis=1), kind="stable")]
    rows = [np.zeros(3), *([(0.0, 0.0, 2.4)] if with_sulfur else []), *au]
    points = np.zeros((13, 3))
    points[: len(rows)] = rows
    return points, len(rows)


def _core_neighborhoods(points, counts, kinds):
    return GoldThiolateNeighborhoods(np.array(points), np.array(counts, dtype=np.int64),
                                     np.array(kinds, dtype=np.int64))


def _distorted(points, count, rng, scale=0.08):
    """A copy without symmetry, its Au rows sorted by distance again (an input's rows)."""
    out = points.copy()
    out[1:count] += scale * rng.normal(size=(count - 1, 3))
    first = 2 if count == 9 else 1  # with S: keep it first
    order = first + np.argsort(np.linalg.norm(out[first:count], axis=1), kind="stable")
    out[first:count] = out[order]
    return out


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_tri=st.sampled_from([2, 4, 10]))
def test_core_gold_ties_of_a_symmetric_reference(seed, n_tri):
    """A reference with a threefold axis: equal triangles (2.33) come in threes, so that
    n_tri = 2 or 4 cuts through them and rounding would decide which are aligned; their
    alignments fit alike. The compiled loop is the tie rules spelled out (the same ties,
    bit for bit; the same rotations to rounding: its sums run in another order, which
    moves entries near zero by ~1e-17, seed 2506),
    R t̂ rotates with the input to the rotations' bounds, and n_tri boundaries that cut
    an orbit of equal triangles are widened to the whole orbit."""
    from mlmlearn.oamlm._gold_thiolate import _align_core
    from mlmlearn.oamlm._superpose import rotation_bound

    rng = np.random.default_rng(seed)
    plain, n_plain = _c3_core(False)
    with_s, n_with_s = _c3_core(True)
    references = _core_neighborhoods([plain, with_s], [n_plain, n_with_s], [CORE, CORE_S])
    Q0 = Rotation.random(random_state=rng.integers(2**31)).as_matrix()
    inputs = _core_neighborhoods(
        [_distorted(plain, n_plain, rng) @ Q0.T, _distorted(with_s, n_with_s, rng) @ Q0.T],
        [n_plain, n_with_s], [CORE, CORE_S])
    R, g = _align_core(inputs, references, n_tri)
    R_plain, g_plain, n_tied, kappa = _plain_core(inputs, references, n_tri)
    np.testing.assert_array_equal(g, g_plain)
    # rotation entries are at most 1 in size: a few ulps of 1 is rounding, a wrong tie is not
    np.testing.assert_allclose(R, R_plain, rtol=0, atol=8 * np.finfo(float).eps)
    assert np.all(n_tied % 3 == 0)  # whole orbits of the threefold axis
    # without widening the candidate list at n_tri = 2 or 4 an orbit would be cut
    Q = Rotation.random(random_state=rng.integers(2**31)).as_matrix()
    moved = _core_neighborhoods(inputs.points @ Q.T, inputs.count, inputs.kind)
    R2, _ = _align_core(moved, references, n_tri)
    T = rng.normal(size=(2, 3))
    r, r2 = np.einsum("nkij,kj->nki", R, T), np.einsum("nkij,kj->nki", R2, T)
    # each tied rotation within its bound of the exact one (the three are congruent
    # three-point alignments: the same κ), the input's rotation rounded by γ₃√3‖P‖
    # (moving the polar factor by 2E/(λ̄/(8κ) − E), λ̄ ≥ |y3|²/2), on both sides
    from _numerics import gamma

    dR = np.vectorize(rotation_bound)(kappa, 2)
    # the target rows of each pair: (S, nearest Au) against a reference with S, else the
    # two nearest Au
    rows = [[[1, 2] if inputs.kind[i] == CORE_S and references.kind[j] == CORE_S
             else ([2, 3] if inputs.kind[i] == CORE_S else [1, 2]) for j in range(2)]
            for i in range(2)]
    y3 = np.array([[np.linalg.norm(inputs.points[i, rows[i][j]]) for j in range(2)]
                   for i in range(2)])
    E = 2 * gamma(3) * np.sqrt(3) * y3 * np.linalg.norm(references.points, axis=(1, 2))[None]
    lam = 0.5 * y3**2
    assert np.all(lam / (8 * kappa) > 2 * E)
    limit = (2 * dR + 2 * E / (lam / (8 * kappa) - E)) * np.linalg.norm(T, axis=1)
    assert np.all(np.linalg.norm(r2 - r @ Q.T, axis=2) <= limit)


def test_core_gold_widened_candidates_are_needed():
    """The threefold reference at n_tri = 2: the ordered pairs of least u come in threes,
    so two candidates alone cut an orbit; the list grows to the orbit."""
    from mlmlearn.oamlm._gold_thiolate import _align_core, _triangle_py

    points, n = _c3_core(False)
    rng = np.random.default_rng(0)
    target = _distorted(points, n, rng)
    tri0, tri = np.empty(6), np.empty(6)
    _triangle_py(target[1], target[2], tri0)
    u = []
    for p, q in itertools.permutations(range(1, n), 2):
        _triangle_py(points[p], points[q], tri)
        u.append(((tri - tri0) ** 2).sum())
    u = np.sort(u)
    equal = np.sum(u - u[0] <= 1e-12 * u[0])
    assert equal >= 3 and u[equal] - u[0] > 1e-6  # a set of equal least u, then a gap
    references = _core_neighborhoods([points], [n], [CORE])
    inputs = _core_neighborhoods([target], [n], [CORE])
    R, _ = _align_core(inputs, references, 2)
    R_plain, _, n_tied, _ = _plain_core(inputs, references, 2)
    np.testing.assert_array_equal(R, R_plain)
    _, _, n_cut, _ = _plain_core(inputs, references, 2, ties=False)
    assert n_tied[0, 0] == 3 and n_cut[0, 0] == 1  # an orbit of the axis, whole


def _gold_blocks(atoms_list, kind):
    """Unit-gold neighborhoods of the structures; ``HALF``: their first block alone."""
    from mlmlearn.oamlm._gold_thiolate import HALF

    P = GoldThiolateAlignment().neighborhoods(AtomicEnvironments(atoms_list, atom_types="Au_unit"))
    if kind != HALF:
        return P
    points = np.zeros_like(P.points)
    points[:, :4] = P.points[:, :4]
    return GoldThiolateNeighborhoods(points, np.full(len(P), 4), np.full(len(P), HALF))


@pytest.mark.parametrize("n_gold", [4, 6])
def test_unit_gold_blocks_tie_across_input_and_reference(rings, n_gold):
    """A built ring's unit gold has a twofold axis swapping its blocks (those of the Au4
    ring all, two of the Au6 ring's not quite). Against half-unit
    gold its two input blocks tie (merged across the kernel calls) and, as a reference,
    its two blocks tie (within one call); either way R is the mean of both blocks'
    rotations and R t̂ rotates with the input. MD frames' blocks never tie: the result is
    the first best block's, as before."""
    from mlmlearn.datasets import gold_thiolate_ring
    from mlmlearn.oamlm._gold_thiolate import HALF, UNIT
    from mlmlearn.oamlm._superpose import best_alignments

    alignment = GoldThiolateAlignment()
    built = _gold_blocks([gold_thiolate_ring(n_gold)], UNIT)
    half = _gold_blocks(rings[:2], HALF)
    md_unit = _gold_blocks(rings[2:4], UNIT)
    Q = Rotation.random(random_state=n_gold).as_matrix()
    T = np.random.default_rng(n_gold).normal(size=(len(half), 3))
    # symmetric unit input against half-unit references: two input blocks, one each
    R, _ = alignment.align(built, half)
    (R0, g0, _, e0, _), (R1, g1, _, e1, _) = [
        best_alignments(built.points[:, list(b)], half.points, np.array([(0, 1, 2, 3)]),
                        return_ties=True) for b in [(0, 1, 2, 3), (0, 4, 5, 6)]]
    first = g0 <= g1
    tied = np.abs(g0 - g1) <= 2 * np.where(first, e0, e1)
    assert tied.mean() > 0.5  # (not every gold atom of the Au6 ring has the axis)
    expected = np.where(tied[..., None, None], (R0 + R1) / 2,
                        np.where(first[..., None, None], R0, R1))
    np.testing.assert_array_equal(R, expected)
    R2, _ = alignment.align(GoldThiolateNeighborhoods(built.points @ Q.T, built.count,
                                                      built.kind), half)
    r, r2 = np.einsum("nkij,kj->nki", R, T), np.einsum("nkij,kj->nki", R2, T)
    assert np.abs(r2 - r @ Q.T).max() <= 1e-9 * np.abs(T).max()
    # half-unit inputs against the symmetric reference: its two blocks are orderings
    R, _ = alignment.align(half, built)
    _, _, _, _, n_tied = best_alignments(half.points[:, :4], built.points, np.array(
        [(0, 1, 2, 3), (0, 4, 5, 6)]), return_ties=True)
    symmetric = tied.all(axis=1)  # the built gold atoms whose blocks tied as inputs
    assert np.all(n_tied[:, symmetric] == 2) and np.all(n_tied[:, ~symmetric] == 1)
    # MD unit gold against half-unit gold: the first best block, bit for bit
    R, g = alignment.align(md_unit, half)
    singles = [best_alignments(md_unit.points[:, list(b)], half.points,
                               np.array([(0, 1, 2, 3)]))[:2] for b in [(0, 1, 2, 3), (0, 4, 5, 6)]]
    first = singles[0][1] <= singles[1][1]
    np.testing.assert_array_equal(g, np.where(first, singles[0][1], singles[1][1]))
    np.testing.assert_array_equal(R, np.where(first[..., None, None], singles[0][0],
                                              singles[1][0]))


@settings(max_examples=50, deadline=None)
@given(u_out=st.floats(0, 10), u_n=st.floats(0, 10), e=st.floats(0, 1e-3),
       scale=st.floats(1, 100), shrink=st.floats(0, 1))
def test_the_cheap_core_tie_check_never_misses_a_tie(u_out, u_n, e, scale, shrink):
    """_may_tie(u_out, u_n, e) False means no pair with u ≥ u_out and an error ≤ e ties
    with the last listed one (error ≤ e): the shortcut changes no result."""
    from mlmlearn.oamlm._gold_thiolate import _G9, _may_tie_py

    if _may_tie_py(u_out, u_n, e):
        return
    u, e_c = u_out * scale, e * shrink
    bound_n = 2 * np.sqrt(u_n) * e + e * e + _G9 * u_n
    assert not u - u_n <= bound_n + 2 * np.sqrt(u) * e_c + e_c**2 + _G9 * u


@pytest.mark.parametrize("max_newton", [50, 2])
@pytest.mark.parametrize("collinear_target", [False, True])
def test_batched_candidate_rotations_equal_one_at_a_time_bit_for_bit(max_newton,
                                                                      collinear_target):
    """_rotations (the candidates' Newton iterations side by side) against one QCP call
    per candidate: every R and p'(λ̂) to the last bit, compiled and in pure Python, with
    candidates that converge, that stop at max_newton (p' = 0), and, with a target
    collinear with the centre, ones whose largest eigenvalue is multiple (QCP's SVD
    fallback)."""
    from mlmlearn.oamlm import _gold_thiolate

    rng = np.random.default_rng(7)
    x = np.zeros((13, 3))
    x[1:] = rng.normal(scale=2.5, size=(12, 3))
    x[5] = 0.5 * x[4]  # collinear with the centre and row 4
    y = np.zeros((3, 3))
    y[1:] = rng.normal(scale=2.5, size=(2, 3))
    if collinear_target:
        y[2] = 0.7 * y[1]
    pairs = [(p, q) for p in range(1, 13) for q in range(1, 13) if p != q]
    cand_p = np.array([p for p, _ in pairs])
    cand_q = np.array([q for _, q in pairs])
    n = len(pairs)
    results = []
    for rotations in (_gold_thiolate._rotations_py, _gold_thiolate._rotations_each_py):
        R, dps = np.empty((n, 3, 3)), np.empty(n)
        rotations(x, y, cand_p, cand_q, n, 1e-12, max_newton, R, dps,
                  np.empty((n, 14)), np.empty(n), np.empty(n, dtype=np.int64))
        results.append((R, dps))
    (R, dps), (R_each, dps_each) = results
    np.testing.assert_array_equal(R, R_each)
    np.testing.assert_array_equal(dps, dps_each)
    if collinear_target or max_newton == 2:
        assert np.any(dps == 0.0)  # fallbacks, or iterations stopped before converging
    if not collinear_target and max_newton == 50:
        assert np.sum(dps > 0.0) > n - 3
    # compiled, inside the core loop: the batched kernel equals the one-at-a-time loop
    P = _core_neighborhoods([np.r_[y, np.zeros((10, 3))] + x * (np.arange(13) > 2)[:, None]],
                            [13], [CORE])
    S = _core_neighborhoods([x], [13], [CORE])
    out = []
    for core in (_gold_thiolate._compile(), _gold_thiolate._compile(batched=False)):
        R, g = np.empty((1, 1, 3, 3)), np.empty((1, 1))
        core(P.points, P.count, P.kind == CORE_S, S.points, S.count, S.kind == CORE_S, 10, R, g)
        out.append((R, g))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


@functools.cache
def _compiled_nn_sums():
    import numba

    from mlmlearn.oamlm import _gold_thiolate

    return (numba.njit(_gold_thiolate._nn_outer_py), numba.njit(_gold_thiolate._nn_accuracy_py))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nx=st.integers(2, 13), ny=st.integers(2, 13),
       noise=st.sampled_from([0.0, 1e-9, 0.05, 1.0]), duplicate=st.booleans())
def test_outer_first_nearest_neighbour_sum_equals_the_plain_one(seed, nx, ny, noise,
                                                                 duplicate):
    """_nn_outer_py (stopping test on the outer points first) against the plain sum
    _nn_accuracy_py, pure Python and compiled: without a limit, or with one the full sum
    does not exceed, the same bits; stopped, a value above the limit and at most the full
    sum (what the core loop relies on). Limits a few ulps below the full sum probe the
    rounding margin of the stopping test; inputs near the rotated reference (noise 0,
    1e-9) and duplicated points give near and exact ties of the least distances."""
    from mlmlearn.oamlm import _gold_thiolate

    rng = np.random.default_rng(seed)
    x = np.zeros((13, 3))
    x[1:nx] = rng.normal(scale=2.8, size=(nx - 1, 3))
    if duplicate and nx > 2:
        x[nx - 1] = x[1]
    Q = Rotation.random(random_state=rng.integers(2**31)).as_matrix()
    y = np.zeros((13, 3))
    m = min(nx, ny)
    y[1:m] = x[1:m] @ Q.T + noise * rng.normal(size=(m - 1, 3))
    y[m:ny] = rng.normal(scale=2.8, size=(ny - m, 3))
    outer_c, plain_c = _compiled_nn_sums()
    work = np.empty((13, 4))
    full = _gold_thiolate._nn_accuracy_py(x, nx, y, ny, Q, work, np.inf)
    assert plain_c(x, nx, y, ny, Q, work, np.inf) == full
    eps = np.finfo(float).eps
    limits = [np.inf, full, 2 * full, full * (1 - eps), full * (1 - 64 * eps), 0.5 * full,
              0.05 * full, 0.0]
    for limit in limits:
        for outer in (_gold_thiolate._nn_outer_py, outer_c):
            r = outer(x, nx, y, ny, Q, work, limit)
            if full <= limit:
                assert r == full
            else:
                assert r == full or limit < r <= full
