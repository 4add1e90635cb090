"""MLMCalculator: ASE's calculator conventions, honest properties, errors that name the atom."""

import numpy as np
import pytest

pytest.importorskip("dscribe")
pytest.importorskip("numba")
from ase import units  # noqa: E402
from ase.calculators.calculator import PropertyNotImplementedError  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from mlmlearn import EMLM  # noqa: E402
from mlmlearn.atoms import MBTR, AtomicEnvironments, AtomTypingError  # noqa: E402
from mlmlearn.datasets import load_gold_thiolate_rings  # noqa: E402
from mlmlearn.forcefield import (  # noqa: E402
    ForceField,
    MLMCalculator,
    UnknownAtomTypeError,
    default_direction_model,
    default_norm_model,
)
from mlmlearn.oamlm import MissingNeighborsError  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:the '.*' (norm|direction) model has .* training environments:UserWarning")


@pytest.fixture(scope="module")
def rings():
    """Ring frames without core gold and past step 0 (the built rings are symmetric)."""
    data = load_gold_thiolate_rings()
    frames = data.frames
    env = AtomicEnvironments(frames)
    core = set(env.structure_index[env.gold_thiolate_types() == "Au_core"].tolist())
    plain = [k for k in range(len(frames)) if data.step[k] > 0 and k not in core]
    return {"train": [frames[k] for k in plain[5::100]],
            "test": [frames[k] for k in plain[55::300]]}


@pytest.fixture(scope="module")
def ff(rings):
    ff = ForceField(default_norm_model(references=30), default_direction_model(references=30),
                    min_samples=2)
    ff.set_params(norm__soap__n_max=3, norm__soap__l_max=2,
                  direction__descriptor__soap__n_max=3, direction__descriptor__soap__l_max=2)
    return ff.fit(AtomicEnvironments(rings["train"]))


@pytest.fixture(scope="module")
def energy_model(rings):
    """Paper II's energy model, small: MBTR → min-max → EMLM on whole ring frames."""
    frames = rings["train"]
    energies = [f.get_potential_energy() for f in frames]
    model = make_pipeline(MBTR(n_grid=40), MinMaxScaler(), EMLM(references=20))
    return model.fit(frames, energies)


def _fresh(frame):
    atoms = frame.copy()
    atoms.calc = None
    return atoms


class CountingForceField(ForceField):
    """A ForceField that counts its ``predict`` calls."""

    def predict(self, X, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        return super().predict(X, **kwargs)


def _counting(ff):
    counting = CountingForceField.__new__(CountingForceField)
    counting.__dict__.update(ff.__dict__)  # the fitted models, shared
    return counting


def test_forces_and_uncertainty_are_the_force_fields(ff, rings):
    atoms = _fresh(rings["test"][0])
    atoms.calc = MLMCalculator(ff)
    assert atoms.calc.implemented_properties == ["forces"]
    F = atoms.get_forces()
    expected, uncertainty = ff.predict(atoms, return_uncertainty=True)
    np.testing.assert_array_equal(F, expected)
    np.testing.assert_array_equal(atoms.calc.results["uncertainty"], uncertainty)
    np.testing.assert_array_equal(atoms.calc.get_uncertainty(atoms), uncertainty)
    assert uncertainty.shape == (len(atoms),) and np.all(uncertainty >= 0)
    assert np.abs(F.sum(axis=0)).max() < 1e-9 * np.abs(F).sum()  # the net force is removed


def test_ase_conventions_state_caching_and_copies(ff, rings):
    counting = _counting(ff)
    atoms = _fresh(rings["test"][1])
    calc = MLMCalculator(counting)
    atoms.calc = calc
    F = atoms.get_forces()
    assert counting.calls == 1
    assert calc.check_state(atoms) == [] and calc.atoms is not atoms
    # cached: a second call, the uncertainty and the results do not recompute
    F2 = atoms.get_forces()
    calc.get_uncertainty(atoms)
    assert counting.calls == 1
    np.testing.assert_array_equal(F, F2)
    # get_forces returns a copy: changing it changes neither the results nor the next call
    F2[:] = 0.0
    np.testing.assert_array_equal(atoms.get_forces(), F)
    np.testing.assert_array_equal(calc.results["forces"], F)
    assert counting.calls == 1
    # moving an atom is a change of state: the results are recomputed, for the new positions
    atoms.positions[3] += [0.05, -0.02, 0.01]
    assert calc.check_state(atoms) == ["positions"]
    moved = atoms.get_forces()
    assert counting.calls == 2
    np.testing.assert_array_equal(moved, ff.predict(atoms))
    assert np.abs(moved - F).max() > 1e-6
    # other ASE state changes count too
    other = atoms.copy()
    other.numbers[0] = 1
    other.pbc = [True, False, False]
    assert set(calc.check_state(other)) >= {"numbers", "pbc"}


def test_energy_is_not_implemented_without_an_energy_model(ff, rings):
    atoms = _fresh(rings["test"][0])
    atoms.calc = MLMCalculator(ff)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError, match="no 'energy': it was built without "
                                                          "an energy model"):
        atoms.calc.calculate(atoms, ["energy"])
    assert "energy" not in atoms.calc.results


def test_energy_from_the_energy_model(ff, energy_model, rings):
    atoms = _fresh(rings["test"][2])
    calc = MLMCalculator(ff, energy_model)
    atoms.calc = calc
    assert set(calc.implemented_properties) == {"energy", "free_energy", "forces"}
    assert set(MLMCalculator.implemented_properties) == {"forces"}  # per instance, not class
    energy = atoms.get_potential_energy()
    assert energy == energy_model.predict([atoms])[0]
    assert atoms.get_potential_energy(force_consistent=True) == energy
    np.testing.assert_array_equal(atoms.get_forces(), ff.predict(atoms))
    # a new structure gets its own energy
    atoms.positions[0] += 0.1
    assert atoms.get_potential_energy() == energy_model.predict([atoms])[0] != energy


def test_an_energy_model_alone_gives_energies_and_nothing_else(energy_model, rings):
    atoms = _fresh(rings["test"][2])
    atoms.calc = MLMCalculator(energy_model=energy_model)
    assert set(atoms.calc.implemented_properties) == {"energy", "free_energy"}
    assert atoms.get_potential_energy() == energy_model.predict([atoms])[0]
    with pytest.raises(PropertyNotImplementedError, match="forces"):
        atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="energy model only"):
        atoms.calc.calculate(atoms, ["forces"])
    with pytest.raises(PropertyNotImplementedError, match="force uncertainty"):
        atoms.calc.get_uncertainty(atoms)
    with pytest.raises(ValueError, match="needs a force_field, an energy_model or both"):
        MLMCalculator()


def _core_typed(frame, ff):
    """The frame with one unit gold pushed until it is core gold: (atoms, its index).

    Tries displacements of 0.3–0.9 Å in a fixed set of directions and keeps the first
    that leaves one S within the 3.0 Å bond cutoff and brings an Au within it, with no
    other atom retyped.
    """
    base = _fresh(frame)
    types = ff.atom_types(base)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(400, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for gold in np.flatnonzero(types == "Au_unit"):
        for step in (0.3, 0.5, 0.7, 0.9):
            for d in directions:
                atoms = base.copy()
                atoms.positions[gold] += step * d
                new = ff.atom_types(atoms)
                if new[gold] == "Au_core" and np.array_equal(np.delete(new, gold),
                                                             np.delete(types, gold)):
                    return atoms, int(gold)
    raise AssertionError("no displacement makes a core gold")  # pragma: no cover


def test_atoms_are_typed_anew_at_every_call(ff, rings):
    atoms = _fresh(rings["test"][3])
    atoms.calc = MLMCalculator(ff)
    atoms.get_forces()  # all unit gold: fine
    moved, gold = _core_typed(rings["test"][3], ff)
    atoms.positions = moved.positions  # a stretched Au–S bond: the gold is now core gold
    with pytest.raises(UnknownAtomTypeError, match=rf"^atom {gold} of structure 0 \(Au\) is of "
                                                   r"atom type 'Au_core', which has no model"):
        atoms.get_forces()


def test_missing_alignment_partners_raise_naming_the_atom(ff, rings):
    atoms = _fresh(rings["test"][0])
    h = int(np.flatnonzero(atoms.numbers == 1)[0])
    carbons = np.flatnonzero(atoms.numbers == 6)
    c = int(carbons[atoms.get_distances(h, carbons).argmin()])
    centre = atoms.positions.mean(axis=0)
    away = atoms.positions[h] - centre
    reach = np.linalg.norm(atoms.positions - centre, axis=1).max()
    atoms.positions[h] = centre + (reach + 10.0) * away / np.linalg.norm(away)
    assert np.delete(atoms.get_distances(h, range(len(atoms))), h).min() > 10.0
    atoms.calc = MLMCalculator(ff)
    # the carbon's rule is checked first (types in sorted order: Au_unit, C, H, S); the
    # carbon has lost its third hydrogen, and the error names it, its structure and rule
    with pytest.raises(MissingNeighborsError,
                       match=rf"^atom {c} \(C\) of structure 0: 2 H within 4.0 Å; the carbon "
                             "rule needs 3"):
        atoms.get_forces()
    # the hydrogen alone (its carbon still has three H): its own rule names it
    lone = _fresh(rings["test"][0])
    extra = lone[[h]]
    extra.positions = atoms.positions[[h]]
    lone += extra
    lone.calc = MLMCalculator(ff)
    with pytest.raises(MissingNeighborsError,
                       match=rf"^atom {len(lone) - 1} \(H\) of structure 0: 0 C within 4.0 Å"):
        lone.get_forces()


def test_unknown_elements_and_periodic_cells_raise(ff, rings):
    atoms = _fresh(rings["test"][0])
    o = int(np.flatnonzero(atoms.numbers == 1)[2])
    atoms[o].symbol = "O"
    atoms.calc = MLMCalculator(ff)
    with pytest.raises(AtomTypingError, match=rf"structure 0: atom {o} is O; gold-thiolate "
                                              "typing knows Au, S, C and H only"):
        atoms.get_forces()
    periodic = _fresh(rings["test"][0])
    periodic.cell = [25.0, 25.0, 25.0]
    periodic.pbc = True
    periodic.calc = MLMCalculator(ff)
    with pytest.raises(ValueError, match=r"structure 0 \(.*\) is periodic \(pbc=\[True, True, "
                                         r"True\]\), but the .* descriptor ignores periodic"):
        periodic.get_forces()


def test_an_unfitted_force_field_is_refused():
    with pytest.raises(NotFittedError):
        MLMCalculator(ForceField())


@pytest.mark.parametrize("dynamics", ["verlet", "langevin"])
def test_molecular_dynamics_runs_on_forces_alone(ff, rings, dynamics):
    counting = _counting(ff)
    atoms = _fresh(rings["test"][1])
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    atoms.calc = MLMCalculator(counting)
    start = atoms.positions.copy()
    if dynamics == "verlet":
        md = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    else:
        md = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.01,
                      rng=np.random.default_rng(2))
    md.run(steps=3)
    assert md.nsteps == 3
    assert np.all(np.isfinite(atoms.positions))
    assert 0 < np.abs(atoms.positions - start).max() < 0.2
    assert counting.calls == 4  # the start and one force call per step, nothing repeated
    np.testing.assert_array_equal(atoms.get_forces(), ff.predict(atoms))


@pytest.mark.parametrize("optimizer", ["BFGS", "FIRE", "LBFGS", "MDMin"])
def test_ase_optimizers_run_on_the_calculator_with_logging(ff, rings, optimizer):
    """Each optimizer, log on, through ForcesOnly: the energy column says nan, nothing made up."""
    import io

    import ase.optimize

    from mlmlearn.forcefield import ForcesOnly

    counting = _counting(ff)
    atoms = _fresh(rings["test"][1])
    atoms.calc = MLMCalculator(counting)
    start = atoms.positions.copy()
    log = io.StringIO()
    opt = getattr(ase.optimize, optimizer)(ForcesOnly(atoms), logfile=log)
    opt.run(fmax=1e-6, steps=3)  # not converged: exactly 3 steps
    assert opt.nsteps == 3
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 + 4  # the header, the start and 3 steps
    assert all(line.split()[3] == "nan" for line in lines[1:])
    moved = np.linalg.norm(atoms.positions - start, axis=1)
    assert 0 < moved.max() <= 3 * 0.2 + 1e-12  # ASE's default maxstep bounds each step
    assert counting.calls == 4  # one force call per logged structure
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energy()
