"""Bundle the fixed-temperature runs beside the heating run in mlmlearn's ``au25.npz``.

    python data-generation/au25_fixed_temperature/bundle.py

Reads the heating run from the packaged archive (every frame, broken ones included; its
trajectory file is not kept, and the archive holds it exactly: positions float64, forces
float32, which the repacking leaves bit for bit as they were) and the two runs stored here
(``Au25(SCH3)18_300K.extxyz.xz``, ``..._500K.extxyz.xz``), and writes all three into the
archive again with the metadata ``python -m mlmlearn.datasets.generate au25`` writes, plus
each run's measured wall time. Rerunning it gives the same archive: the heating run is
taken from it, the other two are replaced.

Wall times (one thread, OMP_NUM_THREADS=1, on a 2-core machine whose other core was busy):
the heating run 6 716 s (1200 steps, 5.6 s each), the 300 K run 2 765 s and the 500 K run
2 697 s (700 steps, 3.95 and 3.85 s each; the tqdm bars of their logs).
"""

import lzma
import shutil
import tempfile
from pathlib import Path

from mlmlearn.datasets import _recipes
from mlmlearn.datasets._bundled import AU25_RUNS, load_archive, pack
from mlmlearn.datasets.generate import metadata

here = Path(__file__).resolve().parent
archive = here.parents[1] / "mlmlearn" / "datasets" / "data" / "au25.npz"
WALL_TIME_S = {"Au25(SCH3)18_heating": 6716, "Au25(SCH3)18_300K": 2765, "Au25(SCH3)18_500K": 2697}

heating = load_archive(archive, runs=AU25_RUNS["heating"], include_broken=True).frames
with tempfile.TemporaryDirectory() as work:
    paths = []
    for name in AU25_RUNS["fixed_temperature"]:
        path = Path(work) / f"{name}.extxyz"
        with lzma.open(here / f"{name}.extxyz.xz") as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target)
        paths.append(str(path))
    settings = {"heating": _recipes.AU25, "fixed_temperature": _recipes.AU25_FIXED_TEMPERATURE}
    names = [f"{AU25_RUNS['heating'][0]}.extxyz", *paths]
    meta = metadata("au25", settings, names, elapsed=0.0)
    del meta["wall_time_s_last_invocation"]  # this is a repacking; the runs' own times:
    for run in meta["runs"]:
        run["wall_time_s"] = WALL_TIME_S[run["name"]]
    meta["wall_time_s"] = sum(WALL_TIME_S.values())
    pack([heating, *paths], archive, metadata=meta)
print(f"wrote {archive} ({archive.stat().st_size / 1e6:.2f} MB)")
