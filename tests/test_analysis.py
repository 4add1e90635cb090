"""Bond, angle and broken-bond statistics of trajectories."""

import numpy as np
import pytest

pytest.importorskip("ase")

from mlmlearn.applications.analysis import (  # noqa: E402
    bond_angles,
    bond_lengths,
    broken_bonds,
    peak,
    smoothed_distribution,
)
from mlmlearn.datasets import gold_thiolate_ring  # noqa: E402


@pytest.mark.parametrize("n", [4, 6])
def test_ring_bonds_and_angles_are_counted_and_invariant(n):
    ring = gold_thiolate_ring(n)
    assert len(bond_lengths(ring, ("Au", "S"))) == 2 * n  # every gold between two sulfurs
    assert len(bond_lengths(ring, ("S", "C"))) == n
    assert len(bond_lengths(ring, ("C", "H"))) == 3 * n
    angles = bond_angles(ring, ("Au", "S", "Au"))
    assert len(angles) == n and len(bond_angles(ring, ("S", "Au", "S"))) == n
    moved = ring.copy()
    moved.rotate(73, (1, -2, 0.5), center="COM")
    moved.translate((3.0, -1.0, 0.2))
    order = np.random.default_rng(0).permutation(len(moved))
    moved = moved[order]
    np.testing.assert_allclose(np.sort(bond_lengths(moved, ("Au", "S"))),
                               np.sort(bond_lengths(ring, ("Au", "S"))), atol=1e-12)
    np.testing.assert_allclose(np.sort(bond_angles(moved, ("Au", "S", "Au"))), np.sort(angles),
                               atol=1e-9)
    # frames concatenate
    assert len(bond_lengths([ring, moved], ("S", "C"))) == 2 * n


def test_an_unknown_pair_needs_a_cutoff():
    with pytest.raises(ValueError, match="no bond cutoff for Au–H"):
        bond_lengths(gold_thiolate_ring(4), ("Au", "H"))
    assert len(bond_lengths(gold_thiolate_ring(4), ("Au", "H"), cutoffs={("Au", "H"): 10})) > 0


def test_a_single_value_smooths_to_a_normalised_gaussian_with_its_width():
    grid = np.linspace(80, 120, 4001)
    density = smoothed_distribution([100.0], grid, 1.75)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, rel=1e-9)
    position, fwhm = peak(grid, density)
    assert position == pytest.approx(100.0, abs=1e-6)
    assert fwhm == pytest.approx(2 * np.sqrt(2 * np.log(2)) * 1.75, rel=1e-4)
    with pytest.raises(ValueError, match="empty"):
        smoothed_distribution([], grid, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        smoothed_distribution([np.nan], grid, 1.0)


def test_peak_of_a_sample_approaches_the_distribution_mode():
    values = np.random.default_rng(1).normal(2.35, 0.05, 20000)
    grid = np.linspace(2.0, 2.7, 701)
    position, fwhm = peak(grid, smoothed_distribution(values, grid, 0.01))
    assert position == pytest.approx(2.35, abs=0.005)
    expected = 2 * np.sqrt(2 * np.log(2)) * np.hypot(0.05, 0.01)
    assert fwhm == pytest.approx(expected, rel=0.05)


def test_broken_bonds_are_named():
    ring = gold_thiolate_ring(4)
    assert broken_bonds(ring) == []
    symbols = np.array(ring.get_chemical_symbols())
    c = int(np.flatnonzero(symbols == "C")[0])
    h = np.flatnonzero(symbols == "H")
    nearest = h[np.argsort(np.linalg.norm(ring.positions[h] - ring.positions[c], axis=1))[0]]
    ring.positions[nearest] += 1.0 * (ring.positions[nearest] - ring.positions[c])
    stretched = np.linalg.norm(ring.positions[nearest] - ring.positions[c])
    assert broken_bonds(ring) == [f"C {c}: third nearest H at {stretched:.2f} Å"]
    s = int(np.flatnonzero(symbols == "S")[0])
    ring.positions[s] += [0, 0, 5.0]
    problems = broken_bonds(ring)
    assert f"S {s}: no Au within 3.0 Å" in problems and any(p.startswith(f"S {s}: nearest C")
                                                           for p in problems)


def test_pca_puts_the_training_cloud_at_the_origin_and_strangers_outside():
    from mlmlearn.applications.analysis import descriptor_pca
    from mlmlearn.atoms import MBTR
    from mlmlearn.datasets import load_gold_thiolate_rings

    frames = [f for f in load_gold_thiolate_rings().frames if len(f) == 24][::10]
    mbtr = MBTR(n_grid=50).fit(frames)
    stretched = [f.copy() for f in frames[:3]]
    for f in stretched:
        f.positions *= 1.3
    (train, far), pca = descriptor_pca(mbtr, frames, stretched)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-9 * np.abs(train).max())
    assert train.shape == (len(frames), 2) and far.shape == (3, 2)
    radius = np.linalg.norm(train, axis=1).max()
    assert np.all(np.linalg.norm(far, axis=1) > radius)
    assert 0 < pca.explained_variance_ratio_.sum() <= 1
