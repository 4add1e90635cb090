"""Progress reports for long work, off unless the caller asks (``verbose``).

tqdm is a core dependency of mlmlearn (a small pure-Python package), so every
``verbose`` switch shows a bar in every install; it is imported when a bar is
first asked for, which keeps ``import mlmlearn`` light.
"""

import sys
import time

__all__ = ["progress", "progress_bar", "StageLog"]


def progress(iterable, *, verbose=0, total=None, desc=None, file=None, leave=True):
    """Wrap ``iterable`` in a tqdm bar when ``verbose`` is truthy.

    Parameters
    ----------
    iterable : iterable
    verbose : int or bool, default=0
        Falsy returns ``iterable`` itself; nothing is written.
    total : int, default=None
        Length of ``iterable`` when it has no ``len``.
    desc : str, default=None
        The bar's label.
    file : file-like, default=None
        Where the bar is drawn (tqdm's default, standard error, when None).
    leave : bool, default=True
        Keep the finished bar on screen.

    Returns
    -------
    iterable
    """
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=file, leave=leave)


def progress_bar(total, *, verbose=0, desc=None, unit="it", file=None, leave=True):
    """A bar the caller advances (``update``, ``set_postfix_str``, ``close``).

    For loops whose progress is not one item per pass, e.g. an iterative
    solver counting converged columns (:func:`mlmlearn.robust.huber_regression`).
    With a falsy ``verbose`` the bar is disabled: its methods do nothing and
    nothing is written.

    Parameters
    ----------
    total : int
        The count the bar runs to.
    verbose : int or bool, default=0
    desc, file, leave
        As in :func:`progress`.
    unit : str, default="it"
        What is counted (shown as ``unit/s``).

    Returns
    -------
    bar : tqdm.tqdm
        Usable as a context manager, which closes it.
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=file, leave=leave,
                disable=not verbose)


class StageLog:
    """Timestamped stage lines (``[  12.3 s] message``) and tqdm bars on one stream.

    Parameters
    ----------
    file : file-like, default=sys.stderr
        Where the lines and bars go; None silences both.
    """

    def __init__(self, file=sys.stderr):
        self.file = file
        self.start = time.perf_counter()

    @property
    def bars(self):
        """Whether loops get a tqdm bar: whenever reporting is on."""
        return self.file is not None

    def elapsed(self):
        """Seconds since the log was created."""
        return time.perf_counter() - self.start

    def __call__(self, message):
        """Write one stage line, prefixed with the elapsed time."""
        if self.file is not None:
            print(f"[{self.elapsed():7.1f} s] {message}", file=self.file, flush=True)

    def loop(self, iterable, desc, total=None):
        """``iterable`` with a bar on this log's stream (no bar when silent)."""
        return progress(
            iterable, verbose=self.bars, total=total, desc=desc, file=self.file, leave=False
        )
