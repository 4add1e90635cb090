"""Model selection distributed over MPI ranks.

``import mlmlearn.model_selection`` registers the joblib backend ``"mpi"``, so
scikit-learn's own ``GridSearchCV``, ``RandomizedSearchCV`` and
``cross_validate`` run distributed without being rewritten. Every rank runs the
same script (SPMD), launched with ``mpiexec -n 2 python search.py``; outside
``mpiexec``, as here, the one rank runs everything in-process:

>>> import joblib
>>> from mpi4py import MPI
>>> from sklearn.datasets import load_diabetes
>>> from sklearn.model_selection import GridSearchCV
>>> import mlmlearn.model_selection  # registers "mpi"
>>> from mlmlearn import EMLM
>>> X, y = load_diabetes(return_X_y=True)
>>> search = GridSearchCV(EMLM(), {"references": [10, 40]}, cv=3)
>>> with joblib.parallel_backend("mpi"):
...     search = search.fit(X, y)  # every rank runs this line; each fits its share
>>> if MPI.COMM_WORLD.Get_rank() == 0:  # every rank ends with the same fitted search
...     print(search.best_params_)
{'references': 40}

Write files and print from one rank only, as above. See :class:`MPIBackend` for
the contract and :class:`MPITransferError` for what every rank raises when a
result cannot be moved between them. Needs mpi4py (in a clone of mlmlearn:
``pip install ".[mpi]"``).
"""

from ._mpi import MPIBackend, MPITransferError

__all__ = ["MPIBackend", "MPITransferError"]
