"""AtomicEnvironments as scikit-learn input, and gold-thiolate atom typing."""

import numpy as np
import pytest

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


def test_neighbours_are_sorted_vectors():
    atoms = molecule("C2H6")
    env = AtomicEnvironments(atoms, species="C")
    hood = env.neighbours(1.6)[0]
    np.testing.assert_allclose(hood.vectors, atoms.positions[hood.indices] - atoms.positions[0])
    lengths = np.linalg.norm(hood.vectors, axis=1)
    assert np.all(np.diff(lengths) >= 0) and len(hood.indices) == 4  # C and 3 H
    with pytest.raises(ValueError, match="cutoff"):
        env.neighbours(-1.0)


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
