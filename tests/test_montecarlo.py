"""Metropolis Monte Carlo: paper II's moves, detailed balance, step-size adaptation, resume."""

import math

import numpy as np
import pytest

pytest.importorskip("ase")

from ase import units  # noqa: E402
from ase.calculators.calculator import Calculator, all_changes  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.cluster import Icosahedron  # noqa: E402
from ase.io import read  # noqa: E402

from mlmlearn.applications.montecarlo import (  # noqa: E402
    AtomMoves,
    GoldThiolateMoves,
    MethylMove,
    MonteCarlo,
    StructureNotRecognizedError,
    SulfurMove,
)
from mlmlearn.applications.optimize import ResumeError  # noqa: E402
from mlmlearn.datasets import gold_thiolate_ring  # noqa: E402


class HarmonicWells(Calculator):
    """E = k/2 Σ |r_i − r0_i|² over the atoms ``wells`` (an analytic oracle)."""

    implemented_properties = ["energy"]

    def __init__(self, centres, k, wells, nan_at=None):
        super().__init__()
        self.centres, self.k, self.wells = centres.copy(), k, np.asarray(wells)
        self.calls, self.nan_at = 0, nan_at

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        d = self.atoms.positions[self.wells] - self.centres[self.wells]
        energy = 0.5 * self.k * float(np.sum(d * d))
        self.results = {"energy": math.nan if self.calls == self.nan_at else energy}


class ForcesOnlyCalculator(Calculator):
    implemented_properties = ["forces"]

    def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"forces": np.zeros((len(self.atoms), 3))}


def _heavy(atoms):
    return np.flatnonzero(np.array(atoms.get_chemical_symbols()) != "H")


# ---------------------------------------------------------------------------- the moves
def test_parts_are_found_from_the_structure():
    atoms = gold_thiolate_ring(5)
    parts = GoldThiolateMoves().parts(atoms)
    kinds = [type(p).__name__ for p in parts]
    assert kinds == ["Displacement"] * 5 + ["SulfurMove"] * 5 + ["MethylMove"] * 5
    symbols = np.array(atoms.get_chemical_symbols())
    moved = np.concatenate([p.indices for p in parts[5:10]])
    assert sorted(symbols[moved]) == sorted(["S"] * 5 + ["H"] * 15)
    for p in parts[10:]:
        assert symbols[p.indices[0]] == "C" and list(symbols[p.indices[1:]]) == ["H"] * 3


def _geometry(atoms_positions, part):
    """C-H lengths, H-C-H angles (as H-H distances) and S->C / C->H angles of a thiolate."""
    s, c, h = (atoms_positions[part.s], atoms_positions[part.c],
               atoms_positions[part.hydrogens])
    ch = h - c
    sc = (c - s) / np.linalg.norm(c - s)
    hh = np.linalg.norm(h[:, None] - h[None], axis=-1)
    return np.linalg.norm(ch, axis=1), hh, ch @ sc / np.linalg.norm(ch, axis=1)


@pytest.mark.parametrize("kind", [SulfurMove, MethylMove])
def test_thiolate_moves_keep_c_h_bonds_and_the_methyl_facing_sulfur(kind):
    atoms = gold_thiolate_ring(5)
    atoms.rattle(0.05, seed=3)  # no special symmetry
    parts = [p for p in GoldThiolateMoves().parts(atoms) if isinstance(p, kind)]
    rng = np.random.default_rng(0)
    for part in parts:
        before = _geometry(atoms.positions, part)
        for _ in range(20):
            new = atoms.positions.copy()
            new[part.indices] = part.propose(atoms.positions, 0.3, rng)
            after = _geometry(new, part)
            for a, b in zip(before, after, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-12)
            moved = np.linalg.norm(new - atoms.positions, axis=1) > 0
            assert set(np.flatnonzero(moved)) <= set(part.indices)
            # the displaced atom (S or C) stays within the step size
            first = part.indices[0]
            assert np.linalg.norm(new[first] - atoms.positions[first]) <= 0.3
            if kind is SulfurMove:  # C stays, the S-C length changes
                assert not moved[part.c]
            else:  # S stays
                assert not moved[part.s]


class _Scripted:
    """A random source that returns preset draws: to apply a move and its exact reverse."""

    def __init__(self, draws):
        self.draws = list(draws)

    def uniform(self, low, high, size=None):
        return self.draws.pop(0)


def test_a_methyl_move_and_its_reverse_proposal_cancel():
    # symmetric proposal: (delta, angle) is undone by (-delta, -angle), so both are
    # proposed with the same density and the Metropolis rule alone decides
    atoms = gold_thiolate_ring(4)
    atoms.rattle(0.05, seed=1)
    part = next(p for p in GoldThiolateMoves().parts(atoms) if isinstance(p, MethylMove))
    d, a = np.array([0.3, -0.2, 0.5]), 0.7
    forward = atoms.positions.copy()
    forward[part.indices] = part.propose(atoms.positions, 0.4, _Scripted([d, a]))
    back = forward.copy()
    back[part.indices] = part.propose(forward, 0.4, _Scripted([-d, -a]))
    np.testing.assert_allclose(back, atoms.positions, atol=1e-12)


def test_unrecognised_structures_are_named():
    atoms = gold_thiolate_ring(4)
    h = int(np.flatnonzero(np.array(atoms.get_chemical_symbols()) == "H")[0])
    del atoms[h]
    with pytest.raises(StructureNotRecognizedError, match="carbon atom .* has 2 hydrogen"):
        GoldThiolateMoves().parts(atoms)
    cu = Icosahedron("Cu", 2)
    with pytest.raises(StructureNotRecognizedError, match="atom 0 is Cu"):
        GoldThiolateMoves().parts(cu)
    cu.calc = EMT()
    with pytest.raises(StructureNotRecognizedError, match="AtomMoves"):
        MonteCarlo(cu, 300.0)


# ---------------------------------------------------------------------------- sampling
def _block_error(x, blocks=20):
    means = np.array([b.mean() for b in np.array_split(np.asarray(x), blocks)])
    return means.std(ddof=1) / math.sqrt(blocks)


def test_gold_thiolate_moves_sample_the_boltzmann_distribution_of_harmonic_wells():
    # wells on Au, S and C only: every Cartesian coordinate of the 12 heavy atoms is a
    # Gaussian of variance kT/k, so <E> = 36 kT/2 = 18 kT whatever the hydrogens do
    atoms = gold_thiolate_ring(4)
    T, k = 300.0, 5.0
    kT = units.kB * T
    wells = _heavy(atoms)
    atoms.calc = HarmonicWells(atoms.positions, k, wells)
    mc = MonteCarlo(atoms, T, step_size=0.05, random_state=1)
    mc.equilibrate(200)
    mc.run(2500)
    energy = np.array(mc.energies[200:]) / kT
    error = _block_error(energy)
    assert abs(energy.mean() - 18.0) < 4 * error + 0.05, (energy.mean(), error)
    assert error < 0.6  # the check above has teeth


def test_single_atom_moves_give_the_boltzmann_variance():
    from ase import Atoms

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [3, 0, 0]])  # each atom in its own well
    T, k = 500.0, 2.0
    atoms.calc = HarmonicWells(atoms.positions, k, [0, 1])
    mc = MonteCarlo(atoms, T, moves=AtomMoves(), step_size=0.1, random_state=2)
    mc.equilibrate(200)
    positions = []
    for n in range(1, 5001):
        mc.run(n)
        positions.append(atoms.positions.copy())
    d = np.array(positions) - atoms.calc.centres
    variance = d[1000:].reshape(-1, 6).var(axis=0)
    expected = units.kB * T / k
    assert np.all(np.abs(variance / expected - 1.0) < 0.15), variance / expected


def test_equilibration_adapts_the_step_size_into_the_acceptance_range():
    from mlmlearn.atoms import SOAP
    from mlmlearn.datasets import isolated_atom_energies, load_gold_thiolate_rings
    from mlmlearn.forcefield import EMLMPotential, MLMCalculator

    frames = [f for f in load_gold_thiolate_rings().frames if len(f) == 24][::40]
    pot = EMLMPotential(SOAP(r_cut=4.0, n_max=3, l_max=2), n_references=20,
                        atomic_energies=isolated_atom_energies()).fit(frames)
    atoms = frames[3].copy()
    atoms.calc = MLMCalculator(pot)
    mc = MonteCarlo(atoms, 300.0, step_size=0.5, random_state=0)  # far too large a start
    mc.equilibrate(120)
    assert mc.step_size < 0.25
    assert 0.4 <= np.mean(mc.acceptance[-60:]) <= 0.6
    frozen = mc.step_size
    mc.run(10)
    assert mc.step_sizes[-10:] == [frozen] * 10 and mc.phases[-1] == "production"
    with pytest.raises(ValueError, match="frozen once production starts"):
        mc.equilibrate(200)


# ---------------------------------------------------------------------------- files
class _Interrupting(EMT):
    def __init__(self, at):
        super().__init__()
        self.calls, self.at = 0, at

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        super().calculate(*args, **kwargs)


def test_an_interrupted_run_resumes_bit_for_bit(tmp_path):
    start = Icosahedron("Cu", 2)
    start.rattle(0.02, seed=0)

    def run(path, calc):
        atoms = start.copy()
        atoms.calc = calc
        mc = MonteCarlo(atoms, 600.0, moves=AtomMoves(), trajectory=path, checkpoint_interval=7,
                        random_state=5)
        mc.equilibrate(12)
        mc.run(25)
        return mc

    whole = run(tmp_path / "whole.extxyz", EMT())
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut.extxyz", _Interrupting(at=13 * 30))  # inside production step 1
    resumed = run(tmp_path / "cut.extxyz", EMT())
    assert (tmp_path / "cut.extxyz").read_bytes() == (tmp_path / "whole.extxyz").read_bytes()
    assert resumed.energies == whole.energies and resumed.step_sizes == whole.step_sizes
    np.testing.assert_array_equal(resumed.atoms.positions, whole.atoms.positions)
    frames = read(tmp_path / "whole.extxyz", ":")
    assert len(frames) == 38 and frames[-1].info["mc_step"] == 37
    assert frames[-1].get_potential_energy() == whole.energy
    assert frames[5].info["phase"] == "equilibration" and frames[20].info["phase"] == "production"

    atoms = start.copy()
    atoms.calc = EMT()
    with pytest.raises(ResumeError, match="temperature_K=300.0 differs"):
        MonteCarlo(atoms, 300.0, moves=AtomMoves(), trajectory=tmp_path / "whole.extxyz")


def test_bad_input_raises_and_leaves_the_trajectory_readable(tmp_path):
    atoms = gold_thiolate_ring(4)
    atoms.calc = HarmonicWells(atoms.positions, 5.0, _heavy(atoms), nan_at=40)
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="temperature_K"):
            MonteCarlo(atoms, bad)
    mc = MonteCarlo(atoms, 300.0, trajectory=tmp_path / "mc.extxyz", random_state=0)
    before = atoms.positions.copy()
    with pytest.raises(ValueError, match=r"the energy is nan at MC step 4, trial move of part"):
        mc.equilibrate(10)
    frames = read(tmp_path / "mc.extxyz", ":")
    assert [f.info["mc_step"] for f in frames] == [0, 1, 2, 3]
    assert np.abs(atoms.positions - before).max() < 1.0  # back at its last accepted state

    bare = gold_thiolate_ring(4)
    with pytest.raises(ValueError, match="no calculator"):
        MonteCarlo(bare, 300.0)
    bare.calc = ForcesOnlyCalculator()
    with pytest.raises(ValueError, match="gives no energy"):
        MonteCarlo(bare, 300.0)
