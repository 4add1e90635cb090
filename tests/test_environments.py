"""AtomicEnvironments as scikit-learn input, and gold-thiolate atom typing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ase")
from ase.build import molecule  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.io import read  # noqa: E402
from sklearn.model_selection import GroupKFold, KFold, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from mlmlearn import EMLM  # noqa: E402
from mlmlearn.atoms import (  # noqa: E402
    SOAP,
    AtomicEnvironments,
    AtomTypingError,
    MissingForcesError,
    gold_thiolate_types,
    neighbor_list,
)
from mlmlearn.datasets import gold_thiolate_ring  # noqa: E402


def _with_forces(atoms, seed):
    atoms = atoms.copy()
    forces = np.random.default_rng(seed).normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=float(seed), forces=forces)
    return atoms


@pytest.fixture
def structures():
    return [_with_forces(molecule(name), s) for s, name in enumerate(["CH4", "C2H6", "C3H8"])]


def test_selection_indexing_and_forces(structures):
    env = AtomicEnvironments(structures, species="C")
    assert len(env) == 6 and env.shape == (6,)
    np.testing.assert_array_equal(env.structure_index, [0, 1, 1, 2, 2, 2])
    expected = np.vstack([a.get_forces()[a.numbers == 6] for a in structures])
    np.testing.assert_array_equal(env.forces, expected)
    np.testing.assert_array_equal(env.y, expected)
    sub = env[np.array([5, 0])]
    np.testing.assert_array_equal(sub.forces, expected[[5, 0]])
    np.testing.assert_array_equal(sub.positions[0], structures[2].positions[sub.atom_index[0]])
    assert len(env[np.arange(6) > 3]) == 2
    assert len(env[2]) == 1


def test_groups_default_to_structures_and_accept_labels(structures):
    env = AtomicEnvironments(structures, groups=["a", "b", "b"])
    assert list(np.unique(env.groups)) == ["a", "b"]
    with pytest.raises(ValueError, match="one label per structure"):
        AtomicEnvironments(structures, groups=[0, 1])


def test_scikit_learn_splitters_pipeline_and_cross_validate(structures):
    env = AtomicEnvironments(structures)
    y = np.linalg.norm(env.forces, axis=1)
    for train, test in GroupKFold(n_splits=3).split(env, y, groups=env.groups):
        assert not set(env.structure_index[train]) & set(env.structure_index[test])
    model = make_pipeline(SOAP(r_cut=3.0, n_max=2, l_max=1), EMLM())
    scores = cross_validate(model, env, y, cv=KFold(3, shuffle=True, random_state=0))
    assert np.all(np.isfinite(scores["test_score"]))


def test_missing_forces_names_the_structure(structures):
    env = AtomicEnvironments(structures + [molecule("H2O")])
    with pytest.raises(MissingForcesError, match="structure 3 .H2O."):
        _ = env.forces


def test_neighbors_are_sorted_vectors():
    atoms = molecule("C2H6")
    env = AtomicEnvironments(atoms, species="C")
    hood = env.neighbors(1.6)[0]
    np.testing.assert_allclose(hood.vectors, atoms.positions[hood.indices] - atoms.positions[0])
    lengths = np.linalg.norm(hood.vectors, axis=1)
    np.testing.assert_array_equal(hood.distances, lengths)
    assert np.all(np.diff(lengths) >= 0) and len(hood.indices) == 4  # C and 3 H
    for bad in (-1.0, 0.0, np.inf, np.nan, "far"):
        with pytest.raises(ValueError, match="cutoff"):
            env.neighbors(bad)


# ------------------------------------------------------------ the neighbour list
def _brute_force(atoms, cutoff):
    """Every (i, j, image) within ``cutoff``, by enumerating enough periodic images."""
    positions, cell = atoms.positions, np.asarray(atoms.cell)
    pbc = np.asarray(atoms.pbc)
    extent = np.linalg.norm(np.ptp(positions, axis=0))  # positions need not lie in the cell
    reach = []
    for k in range(3):
        if not pbc[k]:
            reach.append(range(1))
            continue
        # images along k are needed up to (cutoff + extent) / (the layer spacing along k)
        normal = np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
        spacing = abs(cell[k] @ normal) / np.linalg.norm(normal)
        n = int(np.ceil((cutoff + extent) / spacing)) + 1
        reach.append(range(-n, n + 1))
    shifts = np.array([(a, b, c) for a in reach[0] for b in reach[1] for c in reach[2]])
    images = shifts @ cell
    out = []
    for i in range(len(atoms)):
        rows = []
        for j in range(len(atoms)):
            v = positions[j] - positions[i] + images
            keep = np.linalg.norm(v, axis=1) <= cutoff
            if i == j:
                keep &= shifts.any(axis=1)
            rows += [(j, *w) for w in v[keep]]
        out.append(np.array(sorted(rows)).reshape(-1, 4))
    return out


def _random_structure(seed, pbc):
    from ase import Atoms

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    cell = np.diag(rng.uniform(2.0, 6.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3))
    positions = rng.uniform(-1.0, 7.0, (n, 3))  # partly outside the cell: not wrapped
    return Atoms(["C"] * n, positions=positions, cell=cell, pbc=pbc)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    pbc=st.sampled_from([(0, 0, 0), (1, 1, 1), (1, 0, 0), (1, 1, 0)]),
    cutoff=st.floats(0.5, 7.0),
)
def test_neighbor_list_equals_a_brute_force_oracle(seed, pbc, cutoff):
    """Periodic cells smaller than the cutoff (many images, images of the centre) included."""
    atoms = _random_structure(seed, np.array(pbc, dtype=bool))
    nl = neighbor_list(atoms, cutoff)
    expected = _brute_force(atoms, cutoff)
    assert len(nl) == len(atoms)
    for i in range(len(atoms)):
        index, distance, vector = nl.of(i)
        assert np.all(np.diff(distance) >= 0), "not nearest first"
        np.testing.assert_allclose(distance, np.linalg.norm(vector, axis=1), rtol=1e-15)
        got = np.column_stack([index, vector])
        got = got[np.lexsort(got.T[::-1])]
        assert got.shape == expected[i].shape, f"atom {i}: {len(got)} vs {len(expected[i])}"
        # the same vectors up to the rounding of r_j - r_i + S·cell (cell entries < 7 Å)
        np.testing.assert_allclose(got, expected[i], rtol=0, atol=1e-12)


def test_neighbor_list_of_one_atom_in_a_small_cell_finds_its_images():
    from ase.build import bulk

    gold = bulk("Au", "fcc", a=4.08)  # one atom: all neighbours are its own images
    nl = neighbor_list(gold, 3.0)
    np.testing.assert_allclose(nl.distance, 4.08 / np.sqrt(2), rtol=1e-12)
    assert nl.counts.tolist() == [12] and set(nl.index.tolist()) == {0}
    env = AtomicEnvironments(gold)
    assert env.atom_types.tolist() == ["Au_core"]  # Au neighbours within 5 Å, no S


def test_periodic_structure_needs_a_cell():
    atoms = molecule("CH4")
    atoms.pbc = True  # no cell
    with pytest.raises(ValueError, match="structure 0: pbc=.*cell vectors"):
        AtomicEnvironments(atoms).neighbors(2.0)
    # the function's documented error: pbc and the cell vectors named
    with pytest.raises(ValueError, match=r"pbc=\[True, True, True\].*cell vectors .*zero"):
        neighbor_list(atoms, 2.0)
    atoms.pbc = [True, False, False]
    atoms.cell = [[0, 0, 0], [0, 5, 0], [0, 0, 5]]  # the periodic direction has no vector
    with pytest.raises(ValueError, match=r"pbc=\[True, False, False\]"):
        neighbor_list(atoms, 2.0)


def test_neighbor_list_center_names_each_entrys_atom():
    """``center`` (American spelling, as every public name) is the ``i`` of each pair."""
    from mlmlearn.atoms import NeighborList

    atoms = molecule("C2H6")
    nl = neighbor_list(atoms, 2.5)
    assert not hasattr(NeighborList, "centre")
    for i in range(len(atoms)):
        a, b = nl.start[i], nl.start[i + 1]
        assert np.all(nl.center[a:b] == i)
        # the vector of each entry runs from its center to its neighbour
        np.testing.assert_allclose(
            nl.vector[a:b], atoms.positions[nl.index[a:b]] - atoms.positions[i], atol=1e-12
        )
    small = nl.within(1.2)  # read from the larger list through ``center``
    np.testing.assert_array_equal(small.counts, neighbor_list(atoms, 1.2).counts)


def test_neighbor_lists_are_computed_once_per_structure_and_shared(monkeypatch):
    from mlmlearn.atoms import _atom_types, _neighbors
    from mlmlearn.datasets import load_au25
    from mlmlearn.oamlm import GoldThiolateAlignment, PermutationAlignment

    calls, typings = [], []
    build, rules = _neighbors.neighbor_list, _atom_types.types_from_neighbors
    monkeypatch.setattr(
        _neighbors, "neighbor_list", lambda atoms, r: calls.append(r) or build(atoms, r)
    )
    monkeypatch.setattr(
        _atom_types,
        "types_from_neighbors",
        lambda *args: typings.append(args[2:]) or rules(*args),
    )
    frames = load_au25().frames[:3]
    n = len(frames)
    env = AtomicEnvironments(frames, atom_types=["Au_core", "S"])
    assert calls == [5.0] * n and len(typings) == n  # typing: one list of max(3, 5) Å each
    env.neighbors(3.0)
    env[::2].neighbors(4.0)
    env.select(species="S").neighbors(5.0)
    gold = env.select(atom_types="Au_core")
    GoldThiolateAlignment().neighborhoods(gold)  # reach 5 Å, typing (3, 5)
    PermutationAlignment(4).neighborhoods(env)  # cutoff 5 Å
    _ = env.atom_types, gold.atom_types
    assert calls == [5.0] * n and len(typings) == n
    # a larger cutoff is built once per structure and then serves every smaller one
    wider = gold.select(atom_types="Au_core", core_cutoff=5.5)  # typed anew: (3, 5.5)
    GoldThiolateAlignment(core_cutoff=5.5).neighborhoods(wider)
    env.neighbors(5.5)
    env.neighbors(3.0)
    assert calls == [5.0] * n + [5.5] * n
    assert typings[n:] == [(3.0, 5.5)] * n  # a new pair of typing cutoffs: typed once more
    # a pickled copy (joblib workers) does not carry the caches
    import pickle

    assert pickle.loads(pickle.dumps(env))._store._neighbors == {}


def test_typing_selection_and_gold_alignment_agree_for_any_cutoffs():
    """select(atom_types=...) and GoldThiolateAlignment read the same cached typing."""
    from mlmlearn.datasets import load_au25, load_gold_thiolate_rings
    from mlmlearn.oamlm import GoldThiolateAlignment
    from mlmlearn.oamlm._gold_thiolate import _FAMILY, HALF

    kind_type = {**_FAMILY, HALF: "Au_half_unit"}
    rings = load_gold_thiolate_rings()
    frames = load_au25().frames[200::200] + [rings.frames[k] for k in (100, 1500, 2900)]
    env = AtomicEnvironments(frames, species=["Au", "S"])
    seen = set()
    for bond, core in [(3.0, 5.0), (2.45, 5.0), (2.8, 3.2), (3.3, 6.0)]:
        types = env.gold_thiolate_types(bond_cutoff=bond, core_cutoff=core)
        seen |= set(types.tolist())
        alignment = GoldThiolateAlignment(bond_cutoff=bond, core_cutoff=core)
        P = alignment.neighborhoods(env)
        np.testing.assert_array_equal([kind_type[k] for k in P.kind], types)
        for wanted in ("Au_core", "Au_unit", "Au_half_unit"):
            chosen = env.select(atom_types=wanted, bond_cutoff=bond, core_cutoff=core)
            np.testing.assert_array_equal(chosen.atom_index, env.atom_index[types == wanted])
            if len(chosen):
                kinds = alignment.neighborhoods(chosen).kind
                assert {kind_type[k] for k in kinds} == {wanted}
    # the cutoffs matter: all three gold types occur among these settings
    assert {"Au_core", "Au_unit", "Au_half_unit"} <= seen


def test_gold_alignment_refuses_environments_selected_under_other_typing_cutoffs():
    """Selection and alignment type with one pair of cutoffs, or the alignment refuses.

    The reviewed input: ``select(atom_types="Au_unit")`` under the default cutoffs,
    aligned by ``GoldThiolateAlignment(bond_cutoff=2.5)``, which types those rows as
    several kinds and aligned them under those rules without a word.
    """
    from sklearn.utils import _safe_indexing

    from mlmlearn.datasets import load_au25
    from mlmlearn.oamlm import GoldThiolateAlignment

    frames = load_au25().frames[::150]
    env = AtomicEnvironments(frames)
    assert env.typing_cutoffs is None
    unit = env.select(atom_types="Au_unit")
    assert unit.typing_cutoffs == (3.0, 5.0) and len(unit) > 0
    # the fault is real: under bond_cutoff=2.5 these rows are not all unit gold
    assert len(set(unit.gold_thiolate_types(bond_cutoff=2.5).tolist())) > 1
    pattern = (
        r"selected by atom type with bond_cutoff=3\.0, core_cutoff=5\.0 .*"
        r"GoldThiolateAlignment types atoms with bond_cutoff=(\S+), core_cutoff=(\S+) Å"
    )
    subsets = {
        "selection": unit,
        "indexed": unit[::2],
        "one row": unit[3],
        "boolean mask": unit[np.arange(len(unit)) % 3 == 0],
        "scikit-learn's _safe_indexing": _safe_indexing(unit, np.arange(4)),
        "select(species=...)": unit.select(species="Au"),
    }
    for what, subset in subsets.items():
        assert subset.typing_cutoffs == (3.0, 5.0), what
        for alignment in (
            GoldThiolateAlignment(bond_cutoff=2.5),
            GoldThiolateAlignment(core_cutoff=4.0),
        ):
            with pytest.raises(ValueError, match=pattern) as info:
                alignment.neighborhoods(subset)
            message = str(info.value)
            assert f"bond_cutoff={float(alignment.bond_cutoff)}, core_cutoff=" in message, what
    # matching cutoffs (however spelt) align, and every row under its selected rule
    for alignment in (GoldThiolateAlignment(), GoldThiolateAlignment(bond_cutoff=3, core_cutoff=5)):
        assert len(alignment.neighborhoods(unit)) == len(unit)
    narrow = env.select(atom_types="Au_unit", bond_cutoff=2.5)
    assert narrow.typing_cutoffs == (2.5, 5.0)
    assert set(narrow.atom_types.tolist()) == {"Au_unit"}  # typed under its own cutoffs
    assert len(GoldThiolateAlignment(bond_cutoff=2.5).neighborhoods(narrow)) == len(narrow)
    with pytest.raises(ValueError, match="bond_cutoff=2.5, core_cutoff=5.0 Å, but"):
        GoldThiolateAlignment().neighborhoods(narrow)
    # a later selection by type replaces the cutoffs; one by element alone keeps them
    again = unit.select(atom_types="Au_unit", bond_cutoff=2.5)
    assert again.typing_cutoffs == (2.5, 5.0)
    assert AtomicEnvironments(frames, atom_types="S", core_cutoff=4.5).typing_cutoffs == (3.0, 4.5)
    # environments selected by element only carry no typing: any cutoffs align them
    sulfur = AtomicEnvironments(frames, species="S")
    assert sulfur.typing_cutoffs is None
    assert len(GoldThiolateAlignment(bond_cutoff=2.5).neighborhoods(sulfur)) == len(sulfur)


def test_oamlm_refuses_a_gold_alignment_whose_typing_differs_from_the_selection():
    from sklearn.preprocessing import MinMaxScaler

    from mlmlearn.oamlm import OAMLM, GoldThiolateAlignment

    ring = _with_forces(gold_thiolate_ring(4), 0)
    env = AtomicEnvironments([ring], atom_types="S")
    model = OAMLM(
        make_pipeline(SOAP(r_cut=3.0, n_max=2, l_max=1, sigma=0.5), MinMaxScaler()),
        alignment=GoldThiolateAlignment(bond_cutoff=2.5),
        references=2,
    )
    with pytest.raises(ValueError, match="bond_cutoff=3.0, core_cutoff=5.0 Å, but"):
        model.fit(env, env.forces)


def test_gold_thiolate_types_of_a_structure_equal_the_function():
    from mlmlearn.datasets import load_au25

    frames = load_au25().frames[::150]
    env = AtomicEnvironments(frames)
    for bond, core in [(3.0, 5.0), (2.6, 4.0)]:
        expected = np.concatenate(
            [gold_thiolate_types(a, bond_cutoff=bond, core_cutoff=core) for a in frames]
        )
        np.testing.assert_array_equal(
            env.gold_thiolate_types(bond_cutoff=bond, core_cutoff=core), expected
        )


def test_bad_selection_arguments(structures):
    with pytest.raises(ValueError, match="'Xx' is not an element"):
        AtomicEnvironments(structures, species="Xx")
    with pytest.raises(ValueError, match="atom_types=.*'Au_shell'"):
        AtomicEnvironments(structures, atom_types="Au_shell")
    with pytest.raises(TypeError, match=r"structures\[1\] is str"):
        AtomicEnvironments([structures[0], "CH4"])


def test_read_extxyz(tmp_path, structures):
    from ase.io import write

    path = tmp_path / "frames.extxyz"
    write(path, structures)
    env = AtomicEnvironments.read(path, species="H")
    assert len(env) == 4 + 6 + 8
    np.testing.assert_allclose(env.forces[:4], structures[0].get_forces()[1:])


@pytest.mark.parametrize(
    "name, core, unit", [("au25_sch3_18.xyz", 13, 12), ("au38_sch3_24_q.xyz", 23, 15)]
)
def test_gold_thiolate_typing_of_the_shared_clusters(shared_structures, name, core, unit):
    types = gold_thiolate_types(read(shared_structures / name))
    assert (types == "Au_core").sum() == core
    assert (types == "Au_unit").sum() == unit
    assert (types == "Au_half_unit").sum() == 0


def test_typing_rules_on_built_geometries():
    ring = gold_thiolate_ring(5)
    types = gold_thiolate_types(ring)
    assert list(types[:5]) == ["Au_unit"] * 5
    assert set(types[5:]) == {"S", "C", "H"}
    # pull one sulfur away: both gold atoms bound to it keep one S -> half unit
    broken = ring.copy()
    broken.positions[5] += 3.0 * broken.positions[5] / np.linalg.norm(broken.positions[5])
    types = gold_thiolate_types(broken)
    assert list(types[[0, 4]]) == ["Au_half_unit", "Au_half_unit"]
    env = AtomicEnvironments([ring, broken], atom_types=["Au_half_unit"])
    np.testing.assert_array_equal(env.structure_index, [1, 1])


def test_typing_errors_name_the_atom():
    from ase import Atoms

    lonely = Atoms("Au2SH", positions=[[0, 0, 0], [8, 0, 0], [2.3, 0, 0], [3.6, 0, 0]])
    with pytest.raises(AtomTypingError, match="gold atom 1 has no S"):
        gold_thiolate_types(lonely)
    with pytest.raises(AtomTypingError, match="atom 1 is O"):
        gold_thiolate_types(Atoms("AuO", positions=[[0, 0, 0], [2, 0, 0]]))


# -- reference forces and energies are checked against their structure (issue 12, item 1) ------

from ase.calculators.calculator import PropertyNotImplementedError  # noqa: E402

from mlmlearn.atoms import (  # noqa: E402
    InconsistentStructureError,
    MissingReferenceError,
    StaleCalculatorError,
)


def test_forces_of_a_structure_edited_after_its_calculation_are_refused(structures):
    """The issue's input: ``del atoms[0]`` under a SinglePointCalculator holding 5 rows."""
    edited = structures[0]
    del edited[0]
    with pytest.raises(PropertyNotImplementedError):  # ASE's own get_forces refuses it
        edited.get_forces()
    env = AtomicEnvironments(structures)
    with pytest.raises(StaleCalculatorError, match=r"structure 0 \(H4, 4 atoms\).*numbers"):
        _ = env.forces
    with pytest.raises(StaleCalculatorError, match="structure 0"):
        _ = env.y
    # the later structures' forces are their own, not shifted by the missing row
    later = env[env.structure_index > 0]
    np.testing.assert_array_equal(
        later.forces, np.vstack([structures[1].get_forces(), structures[2].get_forces()])
    )
    with pytest.raises(StaleCalculatorError, match="structure 0"):
        _ = env.structure_energies


def _edit(atoms, kind):
    if kind == "move":
        atoms.positions[1, 0] += 1e-9
    elif kind == "delete":
        del atoms[0]
    elif kind == "append":
        atoms.append("H")
    elif kind == "numbers":
        atoms.numbers[0] = 7
    elif kind == "cell":
        atoms.cell = [10.0, 10.0, 10.0]
    elif kind == "pbc":
        atoms.pbc = True
    elif kind == "charges":
        atoms.set_initial_charges(np.arange(len(atoms)) % 2)
    elif kind == "magmoms":
        atoms.set_initial_magnetic_moments(np.ones(len(atoms)))
    return atoms


EDITS = ["none", "move", "delete", "append", "numbers", "cell", "pbc", "charges", "magmoms"]


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["CH4", "C2H6", "NH3", "CH3OH"]),
    edits=st.lists(st.sampled_from(EDITS), min_size=1, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_forces_are_accepted_exactly_when_ase_get_forces_accepts_them(name, edits, seed):
    """Oracle: ASE's ``get_forces`` on the same SinglePointCalculator structure."""
    atoms = _with_forces(molecule(name), seed)
    for kind in edits:
        _edit(atoms, kind)
    try:
        expected = atoms.get_forces()
    except PropertyNotImplementedError:
        expected = None
    env = AtomicEnvironments([_with_forces(molecule("CO"), 1), atoms])
    np.testing.assert_array_equal(env[:2].forces, env.structures[0].get_forces())
    if expected is None:
        with pytest.raises(StaleCalculatorError, match=r"structure 1 .*changed since"):
            _ = env.forces
    else:
        np.testing.assert_array_equal(env[env.structure_index == 1].forces, expected)


def test_a_live_calculator_is_read_not_rerun():
    from ase.calculators.emt import EMT

    class CountingEMT(EMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            CountingEMT.calls += 1
            super().calculate(*args, **kwargs)

    atoms = molecule("CH4")
    atoms.calc = CountingEMT()
    expected = atoms.get_forces()
    env = AtomicEnvironments(atoms)
    np.testing.assert_array_equal(env.forces, expected)
    assert env.structure_energies[0] == atoms.get_potential_energy()
    atoms.positions[0] += 0.1  # the results now describe the old geometry
    env = AtomicEnvironments(atoms)
    with pytest.raises(StaleCalculatorError, match="CountingEMT.*positions"):
        _ = env.forces
    assert CountingEMT.calls == 1
    fresh = molecule("CH4")
    fresh.calc = EMT()  # no results yet: missing, and nothing is computed
    with pytest.raises(MissingForcesError, match="structure 0"):
        _ = AtomicEnvironments(fresh).forces


@pytest.mark.parametrize(
    "forces, match",
    [
        (np.zeros((5, 2)), r"has shape \(5, 2\), not \(5, 3\)"),
        (np.zeros((4, 3)), r"has shape \(4, 3\), not \(5, 3\)"),
        (np.zeros(15), r"has shape \(15,\), not \(5, 3\)"),
        (np.where(np.arange(15).reshape(5, 3) == 7, np.nan, 0.0), "non-finite value on atom 2"),
        (np.where(np.arange(15).reshape(5, 3) == 13, -np.inf, 0.0), "non-finite value on atom 4"),
    ],
)
def test_calculator_forces_of_the_wrong_shape_or_not_finite_are_refused(structures, forces, match):
    bad = molecule("CH4")
    bad.calc = SinglePointCalculator(bad, energy=0.0, forces=forces)
    env = AtomicEnvironments(structures[1:] + [bad])
    with pytest.raises(InconsistentStructureError, match=rf"structure 2 \(CH4, 5 atoms\).*{match}"):
        _ = env.forces
    np.testing.assert_array_equal(
        env[env.structure_index < 2].forces[0], structures[1].get_forces()[0]
    )


@pytest.mark.parametrize(
    "column, match",
    [
        (np.zeros(5), r"arrays\['forces'\] column has shape \(5,\), not \(5, 3\)"),
        (np.zeros((5, 4)), r"has shape \(5, 4\), not \(5, 3\)"),
        (np.full((5, 3), np.nan), "non-finite value on atom 0: nan"),
    ],
)
def test_forces_columns_of_the_wrong_shape_or_not_finite_are_refused(column, match):
    atoms = molecule("CH4")
    atoms.new_array("forces", column)
    with pytest.raises(InconsistentStructureError, match=match):
        _ = AtomicEnvironments([molecule("H2"), atoms], species="C").forces
    good = molecule("CH4")
    good.new_array("forces", np.ones((5, 3)))
    np.testing.assert_array_equal(AtomicEnvironments(good).forces, np.ones((5, 3)))


def test_structure_energies_are_checked_like_forces(structures):
    env = AtomicEnvironments(structures, species="C")
    np.testing.assert_array_equal(env.structure_energies, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(env.structure_energies[env.structure_index], [0, 1, 1, 2, 2, 2])
    with pytest.raises(MissingReferenceError, match=r"structure 1 \(H2O\) has no reference energy"):
        _ = AtomicEnvironments([structures[0], molecule("H2O")]).structure_energies
    nan = molecule("H2")
    nan.calc = SinglePointCalculator(nan, energy=float("nan"), forces=np.zeros((2, 3)))
    with pytest.raises(InconsistentStructureError, match=r"structure 1 .*'energy'.*non-finite"):
        _ = AtomicEnvironments([structures[0], nan]).structure_energies
    assert issubclass(MissingForcesError, MissingReferenceError)
    assert issubclass(StaleCalculatorError, InconsistentStructureError)
    assert issubclass(InconsistentStructureError, ValueError)


def test_a_selection_that_matches_no_atom_is_refused_naming_what_is_present():
    structures = [molecule("CH4"), molecule("C2H6")]
    with pytest.raises(ValueError, match=r"species='Cl'.*selects no atom.*\['C', 'H'\]"):
        AtomicEnvironments(structures, species="Cl")
    with pytest.raises(ValueError, match=r"atom_types=\['S'\].*selects no atom"):
        AtomicEnvironments(structures, atom_types=["S"])
    assert len(AtomicEnvironments([], species="C")) == 0  # nothing to select from
    assert len(AtomicEnvironments(structures).select(species="S")) == 0  # subsets may be empty
