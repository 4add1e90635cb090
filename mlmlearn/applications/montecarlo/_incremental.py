"""Incremental energies of paper II's model for Monte Carlo: only the moved atoms' pairs.

A trial move changes the pairs that involve the moved atoms and nothing else. MBTR k2
(thesis eqs. 2.6–2.8) is a sum over pairs, so its change is the moved pairs' new terms
minus their old ones; min-max scaling is linear, so the scaled features change by the
scaled difference; and the squared distances to the K references change by
``2 Δx·(x − m_k) + |Δx|²``. The model's own prediction from those distances
(:meth:`EMLM._predict`, or MLM's) gives the energy. Every pair's term is cached (on the
bins where its Gaussian is not negligible), so a trial computes only the moved pairs' new
terms. A full recompute with dscribe every
``refresh_every`` accepted moves bounds the rounding drift; a Monte Carlo checkpoint
keeps the updated state itself, so a resumed run continues bit for bit.
"""

import math

import numpy as np

from ..._optional import compile_once, import_optional

__all__ = ["IncrementalEnergy"]

#: Gaussians are summed over the grid bins within this many σ of their centre; beyond
#: it a bin holds less than 1e-18 of the Gaussian (erfc(9/√2)/2).
_WINDOW_SIGMAS = 9.0


class IncrementalEnergy:
    """Trial energies of an MBTR k2 → scaler → EMLM/MLM pipeline, updated per move.

    The energy protocol of :class:`~mlmlearn.applications.montecarlo.MonteCarlo`
    (``energy=``): it equals the pipeline's ``predict`` of the moved structure to
    rounding (tested to 1e-9 relative against dscribe's MBTR and ``predict``), at a
    fraction of the cost: a move of one thiolate of Au25(SCH3)18 touches 306 of its
    3 081 pairs.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        Fitted: :class:`~mlmlearn.atoms.MBTR` (k2: geometry ``"inverse_distance"`` or
        ``"distance"``, weighting ``"exp"`` or ``"unity"``, normalization ``"none"``,
        not periodic), then a :class:`~sklearn.preprocessing.MinMaxScaler` or
        :class:`~sklearn.preprocessing.StandardScaler` (or none, and any
        :class:`~sklearn.feature_selection.VarianceThreshold`), then
        :class:`~mlmlearn.EMLM` or :class:`~mlmlearn.MLM`, e.g.
        :func:`~mlmlearn.forcefield.default_energy_model`.
    refresh_every : int, default=500
        Accepted moves between full recomputes.

    Raises
    ------
    ValueError
        If ``model`` is not such a pipeline (the message names the step).

    Examples
    --------
    >>> from mlmlearn.datasets import load_gold_thiolate_rings
    >>> from mlmlearn.forcefield import MLMCalculator, default_energy_model
    >>> from mlmlearn.applications.montecarlo import IncrementalEnergy, MonteCarlo
    >>> frames = [f for f in load_gold_thiolate_rings().frames if len(f) == 24][::10]
    >>> model = default_energy_model(references=20).fit(
    ...     frames, [f.get_potential_energy() for f in frames])
    >>> atoms = frames[0].copy()
    >>> atoms.calc = MLMCalculator(energy_model=model)   # the same energies, recomputed
    >>> mc = MonteCarlo(atoms, 300.0, energy=IncrementalEnergy(model), random_state=0)
    >>> mc.run(5)
    >>> abs(mc.energy - atoms.get_potential_energy()) < 1e-9 * abs(mc.energy)
    True
    """

    def __init__(self, model, *, refresh_every=500):
        self.model = model
        self.refresh_every = refresh_every
        self._check_model()

    # -- the protocol ------------------------------------------------------------------
    def start(self, atoms):
        """Bind to ``atoms`` (moved in place by the caller) and return its energy (eV)."""
        self.atoms = atoms
        mbtr = self.mbtr
        species = np.array(mbtr.species_)
        symbols = np.array(atoms.get_chemical_symbols())
        unknown = sorted(set(symbols) - set(species))
        if unknown:
            raise ValueError(f"atoms holds {unknown}, which the model's MBTR was not fitted "
                             f"on (it knows {species.tolist()})")
        # dscribe orders the elements by atomic number
        from ase.data import atomic_numbers

        order = sorted(species, key=lambda s: atomic_numbers[s])
        self._types = np.array([order.index(s) for s in symbols], dtype=np.int64)
        self._n_elements = len(order)
        return self.refresh()

    def refresh(self):
        """Recompute everything from the current positions (dscribe); the energy (eV)."""
        n_atoms, width = len(self.atoms), 2 * int(self._grid[4]) + 1
        self._cache_lo = np.full((n_atoms, n_atoms), -1, dtype=np.int64)
        self._cache_values = np.zeros((n_atoms, n_atoms, width))
        kernels()["cache"](np.ascontiguousarray(self.atoms.positions, dtype=np.float64),
                           self._grid, self._weighting, self._cache_lo, self._cache_values)
        self._buffers = (np.empty((4, n_atoms), dtype=np.int64),
                         np.empty((4, n_atoms, width)))
        v = np.asarray(self.mbtr.transform([self.atoms]), dtype=np.float64)[0]
        self._x = self._scale(v)
        diff = self._x[None, :] - self._references
        self._d2 = np.einsum("ij,ij->i", diff, diff)
        self._accepted = 0
        self._energy = self._predict(self._d2)
        self._pending = None
        return self._energy

    def energy(self):
        return self._energy

    def get_state(self):
        """The scaled features, squared reference distances, energy and accepted-move
        count: what a checkpoint keeps so a resumed run continues bit for bit."""
        return {"x": self._x.copy(), "d2": self._d2.copy(), "energy": self._energy,
                "accepted": self._accepted}

    def set_state(self, state):
        self._x = np.array(state["x"], dtype=np.float64)
        self._d2 = np.array(state["d2"], dtype=np.float64)
        self._energy = float(state["energy"])
        self._accepted = int(state["accepted"])
        self._pending = None

    def trial(self, indices, positions):
        """Energy (eV) with atoms ``indices`` moved to ``positions`` (not yet applied)."""
        indices = np.asarray(indices, dtype=np.int64)
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        delta = np.zeros(self._n_features)
        n_atoms, k = len(self.atoms), len(indices)
        if self._buffers[0].shape[0] < k:  # reused across trials: no allocation per move
            self._buffers = (np.empty((k, n_atoms), dtype=np.int64),
                             np.empty((k, n_atoms, self._cache_values.shape[2])))
        pending_lo, pending_values = self._buffers[0][:k], self._buffers[1][:k]
        kernels()["delta"](np.ascontiguousarray(self.atoms.positions, dtype=np.float64),
                           indices, positions, self._types, self._n_elements, self._grid,
                           self._weighting, self._cache_lo, self._cache_values, pending_lo,
                           pending_values, delta)
        self._pending_terms = (pending_lo, pending_values)
        dx = delta[self._select] * self._factor
        d2 = self._d2 + 2.0 * (self._x @ dx - self._references @ dx) + dx @ dx
        np.maximum(d2, 0.0, out=d2)
        energy = self._predict(d2)
        self._pending = (indices, positions, dx, d2, energy)
        return energy

    def accept(self):
        indices, positions, dx, d2, energy = self._pending
        kernels()["accept"](indices, self._cache_lo, self._cache_values, *self._pending_terms)
        self.atoms.positions[indices] = positions
        self._x += dx
        self._d2, self._energy = d2, energy
        self._pending = None
        self._accepted += 1
        if self._accepted >= self.refresh_every:
            self.refresh()

    def reject(self):
        self._pending = None

    # -- the model -----------------------------------------------------------------------
    def _check_model(self):
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import MinMaxScaler, StandardScaler
        from sklearn.utils.validation import check_is_fitted

        from ...atoms import MBTR

        model = self.model
        if not isinstance(model, Pipeline):
            raise ValueError(f"model is {type(model).__name__}, not a Pipeline of MBTR, a "
                             "scaler and an EMLM or MLM")
        steps = [step for _, step in model.steps if step not in (None, "passthrough")]
        if not steps or not isinstance(steps[0], MBTR):
            raise ValueError("model's first step must be mlmlearn.atoms.MBTR")
        mbtr = steps[0]
        check_is_fitted(mbtr)
        rules = {"geometry": ("inverse_distance", "distance"), "weighting": ("exp", "unity"),
                 "normalization": ("none",), "periodic": (False,), "dtype": ("float64",)}
        for name, allowed in rules.items():
            if getattr(mbtr, name) not in allowed:
                raise ValueError(f"IncrementalEnergy needs MBTR {name} in {list(allowed)}, "
                                 f"not {getattr(mbtr, name)!r}")
        estimator = steps[-1]
        if not hasattr(estimator, "_predict") or not hasattr(estimator, "references_"):
            raise ValueError(f"model's last step {type(estimator).__name__} is not a fitted "
                             "EMLM or MLM")
        # the steps between MBTR and the model as one affine map on selected features:
        # x = v[select] * factor + offset
        from sklearn.feature_selection import VarianceThreshold

        select = np.arange(mbtr.n_features_out_)
        scale, offset = np.ones(len(select)), np.zeros(len(select))
        for step in steps[1:-1]:
            check_is_fitted(step)
            if isinstance(step, MinMaxScaler):
                scale, offset = scale * step.scale_, offset * step.scale_ + step.min_
            elif isinstance(step, StandardScaler):
                s = step.scale_ if step.scale_ is not None else 1.0
                m = step.mean_ if step.mean_ is not None else 0.0
                scale, offset = scale / s, (offset - m) / s
            elif isinstance(step, VarianceThreshold):
                keep = step.get_support()
                select, scale, offset = select[keep], scale[keep], offset[keep]
            else:
                raise ValueError(f"model step {type(step).__name__}: IncrementalEnergy knows "
                                 "VarianceThreshold, MinMaxScaler and StandardScaler between "
                                 "MBTR and the model")
        self._select = select
        self.mbtr, self.estimator = mbtr, estimator
        self._factor, self._offset = scale, offset
        self._references = np.ascontiguousarray(estimator.references_, dtype=np.float64)
        self._n_features = mbtr.n_features_out_
        n = int(mbtr.n_grid)
        dx = (mbtr.grid_max - mbtr.grid_min) / (n - 1)
        # start of the first bin, bin width, σ√2, n, window half-width in bins, normalise
        self._grid = np.array([mbtr.grid_min - dx / 2, dx, mbtr.sigma * math.sqrt(2.0), n,
                               math.ceil(_WINDOW_SIGMAS * mbtr.sigma / dx) + 1,
                               1.0 if mbtr.normalize_gaussians
                               else mbtr.sigma * math.sqrt(2 * math.pi),
                               1.0 if mbtr.geometry == "inverse_distance" else 0.0])
        if mbtr.weighting == "exp":
            self._weighting = np.array([1.0, mbtr.scale, mbtr.threshold])
        else:
            self._weighting = np.array([0.0, 0.0, 0.0])

    def _scale(self, v):
        return v[self._select] * self._factor + self._offset

    def _predict(self, d2):
        D = np.sqrt(d2)[None, :]
        return float(np.asarray(self.estimator._predict(D)).reshape(-1)[0])


# ---------------------------------------------------------------------------- kernels
def _pair_window_py(r, grid, weighting, buf):
    """The MBTR k2 term of a pair at distance ``r`` on its window of bins.

    Writes the values into ``buf`` (length 2·window + 1, zero-padded) and returns the
    first bin, or -1 when the pair contributes nothing (weight below the threshold, or
    its Gaussian off the grid).
    """
    start, dx, s2, n, window, normalise, inverse = (grid[0], grid[1], grid[2], int(grid[3]),
                                                    int(grid[4]), grid[5], grid[6])
    for k in range(buf.shape[0]):
        buf[k] = 0.0
    if weighting[0] > 0.0:
        w = math.exp(-weighting[1] * r)
        if w < weighting[2]:
            return -1
    else:
        w = 1.0
    geom = 1.0 / r if inverse > 0.0 else r
    centre = int((geom - start) / dx)
    lo = max(centre - window, 0)
    hi = min(centre + window + 1, n)
    if lo >= hi:
        return -1
    factor = w / (dx * normalise) * 0.5
    left = math.erf((start + lo * dx - geom) / s2)
    for k in range(lo, hi):
        right = math.erf((start + (k + 1) * dx - geom) / s2)
        buf[k - lo] = factor * (right - left)
        left = right
    return lo


def _block(a, b, n_elements):
    if b < a:
        a, b = b, a
    return b + a * n_elements - (a * (a + 1)) // 2


def _add(out, block, n, lo, values, sign):
    if lo < 0:
        return
    for k in range(values.shape[0]):
        if lo + k >= n:
            break
        out[block * n + lo + k] += sign * values[k]


def _moved_rows(indices, n_atoms):
    """Per atom: its row in ``indices`` (its position among the moved atoms), or -1."""
    moved = np.full(n_atoms, -1, dtype=np.int64)
    for a in range(indices.shape[0]):
        moved[indices[a]] = a
    return moved


def _distance(p, q):
    d = 0.0
    for c in range(3):
        d += (p[c] - q[c]) ** 2
    return math.sqrt(d)


def _cache_py(positions, grid, weighting, cache_lo, cache_values):
    """Every pair's term at ``positions``, into the cache (both orders)."""
    n_atoms = positions.shape[0]
    for i in range(n_atoms):
        for j in range(i + 1, n_atoms):
            lo = _pair_window(_distance(positions[i], positions[j]), grid, weighting,
                              cache_values[i, j])
            cache_lo[i, j] = lo
            cache_lo[j, i] = lo
            cache_values[j, i, :] = cache_values[i, j, :]


def _delta_py(positions, indices, new, types, n_elements, grid, weighting, cache_lo,
              cache_values, pending_lo, pending_values,
              out):  # pragma: no cover - compiled by numba
    """The MBTR k2 change when atoms ``indices`` move from ``positions`` to ``new``.

    Old terms come from the cache; new terms are computed and kept in ``pending_*`` (row
    a: the moved atom ``indices[a]`` with every atom) for :func:`_accept_py`.
    """
    n_atoms = positions.shape[0]
    n = int(grid[3])
    moved = _moved_rows(indices, n_atoms)
    for a in range(indices.shape[0]):
        i = indices[a]
        for j in range(n_atoms):
            b = moved[j]
            if b >= 0 and b <= a:
                continue  # itself, or a moved pair already counted from its first atom
            other = new[b] if b >= 0 else positions[j]
            lo = _pair_window(_distance(new[a], other), grid, weighting, pending_values[a, j])
            pending_lo[a, j] = lo
            block = _block(types[i], types[j], n_elements)
            _add(out, block, n, lo, pending_values[a, j], 1.0)
            _add(out, block, n, cache_lo[i, j], cache_values[i, j], -1.0)


def _accept_py(indices, cache_lo, cache_values, pending_lo,
               pending_values):  # pragma: no cover - compiled by numba
    """Store the pending new terms of an accepted move in the cache."""
    n_atoms = cache_lo.shape[0]
    moved = _moved_rows(indices, n_atoms)
    for a in range(indices.shape[0]):
        i = indices[a]
        for j in range(n_atoms):
            b = moved[j]
            if b >= 0 and b <= a:
                continue
            cache_lo[i, j] = pending_lo[a, j]
            cache_lo[j, i] = pending_lo[a, j]
            cache_values[i, j, :] = pending_values[a, j, :]
            cache_values[j, i, :] = pending_values[a, j, :]


# numba compiles a kernel with the helpers it calls; in Python they are these functions
_pair_window = _pair_window_py


def kernels():
    """The compiled kernels (numba, cached on disk): ``"cache"``, ``"delta"``, ``"accept"``.

    Raises
    ------
    ModuleNotFoundError
        Without numba, naming the extra that installs it.
    """
    return _compile()


@compile_once
def _compile():
    global _pair_window, _block, _add, _distance, _moved_rows
    numba = import_optional("numba", purpose="incremental MBTR energies")
    jit = numba.njit(cache=True, nogil=True)
    _pair_window = jit(_pair_window_py)
    _block, _add, _distance = jit(_block), jit(_add), jit(_distance)
    _moved_rows = jit(_moved_rows)
    return {"cache": jit(_cache_py), "delta": jit(_delta_py), "accept": jit(_accept_py)}
