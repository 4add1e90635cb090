"""Run ASE's optimizers on a calculator that has forces but no energy.

ASE's ``Optimizer.log`` asks for the potential energy at every step, before it
looks at ``logfile`` (``optimizable.get_value()``), so BFGS, FIRE, LBFGS and
MDMin stop with ``PropertyNotImplementedError`` on a calculator whose
``implemented_properties`` has ``"forces"`` and no ``"energy"`` — although their
steps use forces only. A machine-learned force field without an energy model is
such a calculator, and must stay one: an invented energy would be plotted,
compared and trusted.

:class:`ForcesOnly` wraps the atoms handed to the optimizer. The optimizer sees
ASE's own ``OptimizableAtoms`` with one difference in ``get_value``: when the
calculator has no energy, a *logger* (a method named ``log`` of an ASE
``Dynamics``) receives NaN, printed as ``nan``; every other caller — a line
search, FIRE's downhill check, a Gaussian-process or SciPy optimizer — gets
:class:`EnergyRequiredError`, so no optimizer ever steps on a value that is not
an energy. Optimizers known to need energies (``LBFGS(use_line_search=True)``,
``FIRE(downhill_check=True)``, ``BFGSLineSearch``) are refused at their first
log line, before they move an atom. When the calculator does have an energy,
the wrapper changes nothing.

This module imports ASE only when it is used, so that it can be imported, and
its exception caught, in an install without the ``atoms`` extra.
"""

import functools
import inspect
import math

__all__ = ["ForcesOnly", "EnergyRequiredError"]


class EnergyRequiredError(NotImplementedError):
    """An energy was needed from a calculator that has forces only.

    Raised by :class:`ForcesOnly` when an optimizer uses the energy for more
    than its log line (line searches, FIRE's downhill check, GPMin, SciPy's
    optimizers). The message names the optimizer (or caller) and the setting
    that avoids the energy where one exists.
    """


def _energy_users(optimizer):
    """``(why, remedy)`` if ``optimizer`` needs energies for its steps, else None."""
    from ase.optimize.bfgslinesearch import BFGSLineSearch

    if getattr(optimizer, "use_line_search", False):
        return "its line search compares energies", "pass use_line_search=False"
    if getattr(optimizer, "downhill_check", False):
        return "its downhill check compares energies", "pass downhill_check=False"
    if isinstance(optimizer, BFGSLineSearch):
        return "its line search compares energies", "use BFGS"
    return None


@functools.cache
def _optimizable_class():
    """``OptimizableAtoms`` with an energy that may be missing for the log only.

    Built on first use, so that importing this module does not import ASE.
    """
    from ase.calculators.calculator import PropertyNotImplementedError
    from ase.optimize.optimize import Dynamics, OptimizableAtoms

    class ForcesOnlyOptimizable(OptimizableAtoms):
        """ASE's ``OptimizableAtoms``; ``get_value`` is NaN for loggers when there is no energy."""

        def get_value(self):
            try:
                return super().get_value()
            except PropertyNotImplementedError as exc:
                caller = inspect.currentframe().f_back
                owner = caller.f_locals.get("self")
                if caller.f_code.co_name == "log" and isinstance(owner, Dynamics):
                    reason = _energy_users(owner)
                    if reason is None:
                        return math.nan
                    raise EnergyRequiredError(
                        f"{type(owner).__name__} needs energies for its steps ({reason[0]}) "
                        f"and the calculator {type(self.atoms.calc).__name__} has forces only "
                        f"(implemented_properties={_properties(self.atoms.calc)}); {reason[1]}"
                    ) from exc
                who = type(owner).__name__ + "." if owner is not None else ""
                raise EnergyRequiredError(
                    f"{who}{caller.f_code.co_name} needs the potential energy, and the "
                    f"calculator {type(self.atoms.calc).__name__} has forces only "
                    f"(implemented_properties={_properties(self.atoms.calc)}); ForcesOnly gives "
                    "optimizers that step on forces alone (BFGS, LBFGS without line search, "
                    "FIRE without downhill_check, MDMin) a NaN energy for their log line only"
                ) from exc

    return ForcesOnlyOptimizable


def _properties(calc):
    return list(getattr(calc, "implemented_properties", []))


class ForcesOnly:
    """Atoms for ASE's optimizers whose calculator may have forces and no energy.

    Pass it where an optimizer takes ``atoms``:
    ``BFGS(ForcesOnly(atoms), logfile="-").run(fmax=0.05)``. The optimizer
    moves ``atoms`` itself (in place, with its constraints), writes its
    trajectory and log as usual, and logs the energy as ``nan`` when the
    calculator has none. Nothing is invented: the NaN goes only to log lines,
    and an optimizer that would step on the energy raises
    :class:`EnergyRequiredError` instead (see the module description).

    Parameters
    ----------
    atoms : ase.Atoms
        The structure to optimize, with its calculator attached.

    Attributes
    ----------
    atoms : ase.Atoms
        The wrapped structure, moved by the optimizer.

    Raises
    ------
    TypeError
        If ``atoms`` is not an ``ase.Atoms`` (a cell filter needs stress and an
        energy-free cell optimization is not offered).

    Notes
    -----
    Works with BFGS, FIRE (``downhill_check=False``, ASE's default), LBFGS
    (``use_line_search=False``, the default) and MDMin. Molecular dynamics
    (``VelocityVerlet``, ``Langevin``) takes the atoms themselves: it needs no
    energy unless an ``MDLogger`` is attached, which prints energies and so
    cannot run on a forces-only calculator.

    Examples
    --------
    A calculator with forces only (Lennard-Jones forces without the energy):

    >>> import io
    >>> from ase import Atoms
    >>> from ase.calculators.calculator import Calculator, all_changes
    >>> from ase.calculators.lj import LennardJones
    >>> from ase.optimize import BFGS
    >>> class LJForces(Calculator):
    ...     implemented_properties = ["forces"]
    ...     def calculate(self, atoms=None, properties=("forces",), system_changes=all_changes):
    ...         super().calculate(atoms, properties, system_changes)
    ...         self.results["forces"] = LennardJones().get_forces(self.atoms)
    >>> dimer = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 1.3]])
    >>> dimer.calc = LJForces()
    >>> log = io.StringIO()
    >>> bool(BFGS(ForcesOnly(dimer), logfile=log).run(fmax=1e-3))
    True
    >>> print(round(dimer.get_distance(0, 1), 3))  # the minimum, 2**(1/6) sigma
    1.122
    >>> log.getvalue().splitlines()[1].split()[3]
    'nan'
    """

    def __init__(self, atoms):
        from .._optional import import_optional

        Atoms = import_optional("ase", purpose="ForcesOnly").Atoms
        if not isinstance(atoms, Atoms):
            raise TypeError(f"ForcesOnly wraps an ase.Atoms; got atoms={type(atoms).__name__}")
        self.atoms = atoms

    def __ase_optimizable__(self):
        return _optimizable_class()(self.atoms)

    def __len__(self):
        return len(self.atoms)

    def __repr__(self):
        return f"ForcesOnly({self.atoms!r})"
