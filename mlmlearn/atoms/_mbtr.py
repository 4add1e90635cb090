"""Many-body tensor representation of whole structures (thesis eqs. 2.6–2.8, paper II)."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._optional import import_optional
from ._descriptor import COMMON_CONSTRAINTS, DescriptorTransformer, stack_rows

__all__ = ["MBTR"]

# dscribe's System.from_atoms passes momenta to ase.Atoms, which ase >= 3.27
# rejects ("Use only one of momenta and velocities").
_ASE_BREAKS_MBTR = (3, 27)


class MBTR(DescriptorTransformer):
    """Many-body tensor representation, one row per structure.

    MBTR is a global descriptor: it takes a sequence of structures (``ase.Atoms``)
    and suits per-structure targets such as total energies. It refuses
    :class:`~mlmlearn.atoms.AtomicEnvironments`, whose samples are atoms: every
    atom of a structure would get the same row, so a per-atom target could not be
    learnt. Pass ``environments.structures`` (with one target per structure), or
    use :class:`SOAP` for per-atom targets.

    The default is the k = 2 inverse-distance form with exponential weighting
    used in paper II, with its second parameter set
    ``{min, max, n, σ, d, cutoff} = {0, 1.2, 100, 0.045, 0.8, 1e-5}``
    (thesis section 3.2): for every element pair the inverse distances
    ``1/|r_i − r_j|`` are Gaussian-broadened (eq. 2.8), weighted by
    ``exp(−d |r_i − r_j|)`` (eq. 2.7) and sampled on a grid (eq. 2.6).

    A clonable wrapper around :class:`dscribe.descriptors.MBTR`; every
    parameter is swept like any scikit-learn parameter.

    Parameters
    ----------
    species : sequence of str, default=None
        Elements the descriptor knows; ``None`` takes those present at :meth:`fit`.
    geometry : str, default="inverse_distance"
        dscribe geometry function ("atomic_number" for k = 1, "distance" or
        "inverse_distance" for k = 2, "angle" or "cosine" for k = 3).
    grid_min, grid_max : float, default=0.0, 1.2
        Range of the sweeping variable x ("min", "max"; 1/Å for inverse distance).
    n_grid : int, default=100
        Number of grid points n_x.
    sigma : float, default=0.045
        Gaussian broadening σ.
    weighting : {"exp", "inverse_square", "unity"}, default="exp"
        Weighting function.
    scale : float, default=0.8
        d (α) of the exponential weighting, in 1/Å.
    threshold : float, default=1e-5
        "cutoff": weights below it are left out of the sum.
    normalize_gaussians : bool, default=True
    normalization : {"none", "l2", "n_atoms", "valle_oganov"}, default="none"
    periodic : bool, default=False
    dtype : {"float64", "float32"}, default="float64"
    n_jobs : int, default=None
        Parallel jobs over structures (joblib's meaning).
    memory : str or joblib.Memory, default=None
        Cache each structure's MBTR on disk, so folds and search candidates
        with the same MBTR parameters compute it once.

    Attributes
    ----------
    species_ : list of str
    descriptor_ : dscribe.descriptors.MBTR
    n_features_out_ : int

    Examples
    --------
    >>> from ase.build import molecule
    >>> mbtr = MBTR(n_grid=50).fit([molecule("CH4"), molecule("C2H6")])
    >>> mbtr.species_, mbtr.transform([molecule("C2H6")]).shape
    (['H', 'C'], (1, 150))
    """

    _feature_prefix = "mbtr"
    _parameter_constraints: dict = {
        **COMMON_CONSTRAINTS,
        "geometry": [
            StrOptions({"atomic_number", "distance", "inverse_distance", "angle", "cosine"})
        ],
        "grid_min": [Real],
        "grid_max": [Real],
        "n_grid": [Interval(Integral, 1, None, closed="left")],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "weighting": [StrOptions({"exp", "inverse_square", "unity"})],
        "scale": [Interval(Real, 0, None, closed="neither")],
        "threshold": [Interval(Real, 0, None, closed="neither")],
        "normalize_gaussians": ["boolean"],
        "normalization": [StrOptions({"none", "l2", "n_atoms", "valle_oganov"})],
    }

    def __init__(
        self,
        *,
        species=None,
        geometry="inverse_distance",
        grid_min=0.0,
        grid_max=1.2,
        n_grid=100,
        sigma=0.045,
        weighting="exp",
        scale=0.8,
        threshold=1e-5,
        normalize_gaussians=True,
        normalization="none",
        periodic=False,
        dtype="float64",
        n_jobs=None,
        memory=None,
    ):
        self.species = species
        self.geometry = geometry
        self.grid_min = grid_min
        self.grid_max = grid_max
        self.n_grid = n_grid
        self.sigma = sigma
        self.weighting = weighting
        self.scale = scale
        self.threshold = threshold
        self.normalize_gaussians = normalize_gaussians
        self.normalization = normalization
        self.periodic = periodic
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.memory = memory

    def _check_parameters(self):
        if not self.grid_max > self.grid_min:
            raise ValueError(
                f"grid_max={self.grid_max!r} must be larger than grid_min={self.grid_min!r}"
            )

    @staticmethod
    def _dscribe_class():
        ase = import_optional("ase", purpose="MBTR")
        version = tuple(int(p) for p in ase.__version__.split(".")[:2])
        if version >= _ASE_BREAKS_MBTR:
            raise ImportError(
                f"dscribe's MBTR fails with ase {ase.__version__} (ase >= 3.27 rejects the "
                "momenta dscribe passes); install 'ase<3.27' (mlmlearn's 'atoms' extra pins it: "
                'pip install ".[atoms]" in the source tree)'
            )
        return import_optional("dscribe.descriptors", purpose="MBTR").MBTR

    def _dscribe_kwargs(self, species):
        if self.weighting == "unity":
            weighting = {"function": "unity"}
        else:
            weighting = {
                "function": self.weighting,
                "scale": float(self.scale),
                "threshold": float(self.threshold),
            }
        return dict(
            species=list(species),
            geometry={"function": self.geometry},
            grid={
                "min": float(self.grid_min),
                "max": float(self.grid_max),
                "n": int(self.n_grid),
                "sigma": float(self.sigma),
            },
            weighting=weighting,
            normalize_gaussians=bool(self.normalize_gaussians),
            normalization=self.normalization,
            periodic=bool(self.periodic),
            sparse=False,
            dtype=self.dtype,
        )

    @staticmethod
    def _structures(X):
        from ._environments import AtomicEnvironments

        Atoms = import_optional("ase", purpose="MBTR").Atoms
        if isinstance(X, Atoms):
            raise TypeError("MBTR takes a sequence of ase.Atoms; wrap one structure in a list")
        if isinstance(X, AtomicEnvironments):
            raise TypeError(
                "MBTR describes whole structures (one row per structure), but X is "
                f"AtomicEnvironments ({len(X)} atom-centred samples), which would give every atom "
                "of a structure the same row. For per-structure targets (e.g. energies) pass "
                "the structures: X.structures or a list of ase.Atoms; for per-atom targets "
                "use SOAP."
            )
        structures = list(X)
        for s, atoms in enumerate(structures):
            if not isinstance(atoms, Atoms):
                raise TypeError(f"X[{s}] is {type(atoms).__name__}, not ase.Atoms")
        return structures

    def transform(self, X):
        """MBTR vector of every structure.

        Parameters
        ----------
        X : sequence of ase.Atoms
            Not :class:`~mlmlearn.atoms.AtomicEnvironments` (see the class docstring).

        Returns
        -------
        X_new : ndarray of shape (n_structures, n_features_out_)
        """
        check_is_fitted(self, "descriptor_")
        structures = self._structures(X)
        self._check_species(structures, range(len(structures)))
        memory = self._memory()
        if memory.location is None:
            return _mbtr_rows(self.descriptor_, structures, self._n_jobs())
        kwargs = self._dscribe_kwargs(self.species_)
        cached = memory.cache(_mbtr_one)
        rows = [
            cached(kwargs, a.numbers, a.positions, np.asarray(a.cell), a.pbc) for a in structures
        ]
        return np.vstack(rows) if rows else np.empty((0, self.n_features_out_), self.dtype)


def _mbtr_rows(mbtr, structures, n_jobs):
    """Rows of the dscribe ``mbtr``; ``n_jobs`` contiguous chunks run in parallel."""
    if n_jobs > 1 and len(structures) > 1:
        from joblib import Parallel, delayed

        chunks = np.array_split(np.arange(len(structures)), min(n_jobs, len(structures)))
        parts = Parallel(n_jobs=len(chunks))(
            delayed(_mbtr_rows)(mbtr, [structures[i] for i in chunk], 1) for chunk in chunks
        )
        return np.vstack(parts)

    Atoms = import_optional("ase", purpose="MBTR").Atoms
    n_features = mbtr.get_number_of_features()
    if not structures:
        return np.empty((0, n_features), dtype=mbtr.dtype)
    # bare copies: dscribe copies every Atoms property, calculators included
    bare = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in structures]
    with warnings.catch_warnings():
        # dscribe calls the deprecated Atoms.get_calculator on every structure
        warnings.filterwarnings("ignore", "Please use atoms.calc", FutureWarning)
        result = mbtr.create(bare, n_jobs=1)
    return stack_rows(result, len(bare), n_features)


def _mbtr_one(kwargs, numbers, positions, cell, pbc):
    # cached on the parameters and the structure; the descriptor is built on a miss only
    Atoms = import_optional("ase", purpose="MBTR").Atoms
    DscribeMBTR = import_optional("dscribe.descriptors", purpose="MBTR").MBTR
    atoms = Atoms(numbers, positions, cell=cell, pbc=pbc)
    return _mbtr_rows(DscribeMBTR(**kwargs), [atoms], 1)
