"""Model selection distributed over MPI ranks.

``import mlmlearn.model_selection`` registers the joblib backend ``"mpi"``, so
scikit-learn's own ``GridSearchCV``, ``RandomizedSearchCV`` and
``cross_validate`` run distributed without being rewritten::

    # search.py — run with:  mpiexec -n 4 python search.py
    import joblib
    import mlmlearn.model_selection  # noqa: F401  (registers "mpi")

    with joblib.parallel_backend("mpi"):
        search.fit(X, y)            # every rank runs this line; each fits its share
    if search.rank_ == 0: ...       # every rank ends with the same fitted search

See :class:`MPIBackend` for the contract.
"""

from ._mpi import MPIBackend

__all__ = ["MPIBackend"]
