"""An ASE calculator around a fitted :class:`~mlmlearn.forcefield.ForceField` or potential.

Imports ASE when loaded: ``mlmlearn.forcefield`` loads it on first use of
``MLMCalculator``, so a missing ``atoms`` extra is named then.
"""

import numpy as np

from .._optional import import_optional

_calculator = import_optional("ase.calculators.calculator", purpose="MLMCalculator")
Calculator, all_changes = _calculator.Calculator, _calculator.all_changes
PropertyNotImplementedError = _calculator.PropertyNotImplementedError

__all__ = ["MLMCalculator"]


class MLMCalculator(Calculator):
    """Machine-learned forces (and energies) as an ASE calculator.

    Parameters
    ----------
    force_field : ForceField, EMLMPotential or None
        A fitted :class:`~mlmlearn.forcefield.EMLMPotential` gives ``energy``,
        ``free_energy`` (the same, eV), per-atom ``energies`` and ``forces``
        (eV/Å, the exact ``−∂E/∂r``): what optimizers, MD and Monte Carlo need.
        A fitted :class:`~mlmlearn.forcefield.ForceField` gives ``forces`` and
        the per-atom ``results["uncertainty"]`` (Å, the direction model's
        predicted alignment accuracy, see :meth:`ForceField.predict`).
        None with an ``energy_model``: the calculator gives ``energy`` and
        ``free_energy`` only (what Monte Carlo needs), and asking it for forces
        raises ASE's ``PropertyNotImplementedError``.
    energy_model : regressor, default=None
        A fitted model of whole structures whose ``predict([atoms])`` gives the
        potential energy in eV (paper II: MBTR → scaler → EMLM). With it,
        ``energy`` (and ``free_energy``, the same value) are implemented; the
        energy is not the integral of the forces, which come from
        ``force_field``. Without it, asking a force field for the energy raises
        ASE's ``PropertyNotImplementedError``: no energy is made up. Run ASE's
        optimizers on :class:`~mlmlearn.forcefield.ForcesOnly` then. Not
        allowed with a potential, which has its own energy.
    blas_threads : int or None, default=1
        BLAS threads during a force call; None leaves the process's setting.
        One structure's force call is a few hundred rows, where threads cost
        more than they give (measured on a 30-atom ring, 2 busy cores: 0.027 s
        per call on one thread, 0.14 s on two).
    **kwargs
        Passed to ASE's ``Calculator`` (e.g. ``label``).

    Notes
    -----
    Every calculation types the atoms anew (bonds break during optimization)
    and follows ASE's conventions: results are cached until ``check_state``
    reports a change, and ``get_forces`` returns a copy. Errors name the atom:
    an element without a model, an atom whose alignment partners are missing
    (:class:`~mlmlearn.atoms.MissingNeighborsError`), a periodic cell given to
    a force field whose descriptors are not periodic.

    Examples
    --------
    >>> from mlmlearn.atoms import AtomicEnvironments
    >>> from mlmlearn.datasets import gold_thiolate_ring, load_gold_thiolate_rings
    >>> from mlmlearn.forcefield import (ForceField, MLMCalculator, default_direction_model,
    ...                                  default_norm_model)
    >>> frames = [f for f in load_gold_thiolate_rings().frames if len(f) == 36][::30]
    >>> ff = ForceField(default_norm_model(references=40),
    ...                 default_direction_model(references=40)).fit(AtomicEnvironments(frames))
    >>> atoms = gold_thiolate_ring(6)
    >>> atoms.calc = MLMCalculator(ff)
    >>> atoms.get_forces().shape, atoms.calc.results["uncertainty"].shape
    ((36, 3), (36,))
    """

    implemented_properties = ["forces"]

    def __init__(self, force_field=None, energy_model=None, *, blas_threads=1, **kwargs):
        from sklearn.utils.validation import check_is_fitted

        self._potential = hasattr(force_field, "energies_forces")
        if force_field is None:
            if energy_model is None:
                raise ValueError("MLMCalculator needs a force_field, an energy_model or both")
            check_is_fitted(energy_model)
        elif self._potential:
            check_is_fitted(force_field, "coef_")
            if energy_model is not None:
                raise ValueError(
                    "energy_model is for a ForceField; a potential's energy is its own")
        else:
            check_is_fitted(force_field, "norm_models_")
        super().__init__(**kwargs)
        self.force_field = force_field
        self.energy_model = energy_model
        self.blas_threads = blas_threads
        # honest per instance: an energy only with an energy model or a potential
        if self._potential:
            self.implemented_properties = ["energy", "free_energy", "energies", "forces"]
        elif force_field is None:
            self.implemented_properties = ["energy", "free_energy"]
        else:
            self.implemented_properties = (
                ["forces"] if energy_model is None else ["energy", "free_energy", "forces"])

    def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
        missing = [p for p in properties if p not in self.implemented_properties]
        if missing and self._potential:
            raise PropertyNotImplementedError(
                f"MLMCalculator has no {missing[0]!r} for a potential; it gives "
                f"{self.implemented_properties}")
        if missing and self.force_field is None:
            raise PropertyNotImplementedError(
                f"MLMCalculator has no {missing[0]!r}: it was built with an energy model only "
                "(whole-structure energies, no forces); use it for Monte Carlo, or give a "
                "force field or a potential")
        if missing:
            raise PropertyNotImplementedError(
                f"MLMCalculator has no {missing[0]!r}: it was built without an energy "
                "model (give energy_model=...); run ASE's optimizers on ForcesOnly(atoms)")
        super().calculate(atoms, properties, system_changes)
        from threadpoolctl import threadpool_limits

        # one structure is a few hundred rows: BLAS threads cost more than they give
        # (a 30-atom ring on 2 busy cores: 0.027 s per call on one thread, 0.14 s on two)
        if self._potential:
            with threadpool_limits(self.blas_threads, "blas"):
                energies, forces = self.force_field.energies_forces(self.atoms)
            self.results["energies"] = energies
            self.results["energy"] = self.results["free_energy"] = float(energies.sum())
            self.results["forces"] = forces
            return
        if self.force_field is not None:
            with threadpool_limits(self.blas_threads, "blas"):
                forces, uncertainty = self.force_field.predict(self.atoms,
                                                               return_uncertainty=True)
            self.results["forces"] = forces
            self.results["uncertainty"] = uncertainty
        if self.energy_model is not None:
            with threadpool_limits(self.blas_threads, "blas"):
                energy = float(np.asarray(self.energy_model.predict([self.atoms])).reshape(-1)[0])
            self.results["energy"] = self.results["free_energy"] = energy

    def get_uncertainty(self, atoms=None):
        """Per-atom uncertainty (Å) of the forces of ``atoms``, computed if needed.

        Only a :class:`ForceField` has one (ASE's ``PropertyNotImplementedError``
        otherwise).

        Returns
        -------
        uncertainty : ndarray of shape (n_atoms,)
            A copy of ``results["uncertainty"]``.
        """
        if self._potential or self.force_field is None:
            raise PropertyNotImplementedError(
                "only a force field gives a force uncertainty, not a potential or an energy "
                "model")
        self.get_property("forces", atoms)
        return self.results["uncertainty"].copy()
