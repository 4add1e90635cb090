"""Progress reports for long work, off unless the caller asks (``verbose``)."""

import sys
import time

__all__ = ["progress", "StageLog"]


def progress(iterable, *, verbose=0, total=None, desc=None, file=None, leave=True):
    """Wrap ``iterable`` in a tqdm bar when ``verbose`` is truthy.

    tqdm is imported only when a bar is asked for, so the core package does
    not depend on it. ``file`` is where the bar is drawn (tqdm's default,
    standard error, when None).
    """
    if not verbose:
        return iterable
    from ._optional import import_optional

    tqdm = import_optional("tqdm.auto", purpose="verbose progress bars (or verbose=0)").tqdm
    return tqdm(iterable, total=total, desc=desc, file=file, leave=leave)


class StageLog:
    """Timestamped stage lines (``[  12.3 s] message``) and optional tqdm bars on one stream.

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
        """Whether loops get a tqdm bar: reporting is on and tqdm is installed."""
        if self.file is None:
            return False
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return False
        return True

    def elapsed(self):
        """Seconds since the log was created."""
        return time.perf_counter() - self.start

    def __call__(self, message):
        """Write one stage line, prefixed with the elapsed time."""
        if self.file is not None:
            print(f"[{self.elapsed():7.1f} s] {message}", file=self.file, flush=True)

    def loop(self, iterable, desc, total=None):
        """``iterable`` with a bar on this log's stream (no bar when silent or without tqdm)."""
        return progress(
            iterable, verbose=self.bars, total=total, desc=desc, file=self.file, leave=False
        )
