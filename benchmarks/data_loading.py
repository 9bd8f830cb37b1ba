"""Loading speed of a user's image folder: 60,000 PNG digits, first load and from the cache.

Writes MNIST's training digits as class folders (``0/`` ... ``9/``, 28x28 PNG) in a temp
folder, then loads them with :func:`digitlab.data.source.load_source` four ways: without and
with preprocessing, each first with an empty cache and then from the cache. The content
digest that keys the cache is timed on its own (every load, hit or miss, pays it). Without
preprocessing the digits must come back bit-exact. Writes docs/data-loading.md.

Run: ``DIGITLAB_MNIST_MIRROR=../shared/data/mnist .venv/bin/python benchmarks/data_loading.py``
(``BENCH_FIRST_TARGET`` images/s for a first load without preprocessing, 5000 by default;
``BENCH_CACHED_TARGET`` seconds for a load from the cache, 2 by default).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from digitlab.data.cache import cache_dir, digest_files, load_entry
from digitlab.data.dataset import Dataset, load_mnist
from digitlab.data.decode import decode_all
from digitlab.data.export import encode_png
from digitlab.data.formats import scan_image_folder
from digitlab.data.source import load_source
from digitlab.fileio import write_text_atomic
from digitlab.system import cpu_cores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "data-loading.md"


def write_class_folders(root: Path, ds: Dataset) -> None:
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(ds.images, ds.labels.tolist(), strict=True)):
        (root / str(label) / f"{i:05d}.png").write_bytes(encode_png(image))


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> int:
    train = load_mnist()["train"]
    first_target = float(os.environ.get("BENCH_FIRST_TARGET", 5000))
    cached_target = float(os.environ.get("BENCH_CACHED_TARGET", 2))
    with tempfile.TemporaryDirectory(prefix="digitlab-bench-") as tmp:
        os.environ["DIGITLAB_HOME"] = str(Path(tmp) / "home")  # an empty cache of sources
        root = Path(tmp) / "digits"
        _, write_s = timed(lambda: write_class_folders(root, train))
        print(f"wrote {len(train):,} PNGs in {write_s:.1f} s", flush=True)
        load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        entries, scan_s = timed(lambda: scan_image_folder(root))
        names = [name for name, _ in entries]
        paths = [os.path.join(root, name) for name in names]
        _, digest_s = timed(lambda: digest_files(paths, names))
        rows = []
        order = np.argsort(train.labels, kind="stable")  # class folders, then file names
        exact = True
        for preprocess in (False, True):
            for when in ("first load", "from cache"):
                ds, seconds = timed(lambda p=preprocess: load_source(root, preprocess=p))
                rows.append((preprocess, when, len(ds), seconds))
                print(f"preprocess={preprocess!s:<5} {when:<10} {len(ds):,} images in"
                      f" {seconds:6.2f} s = {len(ds) / seconds:>9,.0f}/s", flush=True)  # fmt: skip
                if not preprocess:
                    exact &= np.array_equal(ds.images, train.images[order])
                    exact &= np.array_equal(ds.labels, train.labels[order])
        per_image = {}  # seconds per image in one process
        for preprocess, n in ((False, 5000), (True, 500)):
            work = (paths[:n], names[:n])
            _, seconds = timed(lambda w=work, p=preprocess: decode_all(*w, preprocess=p, workers=1))
            per_image[preprocess] = seconds / n
        keys = [f.stem for f in cache_dir().glob("*.npz")]
        read_s = max(timed(lambda k=k: load_entry(k))[1] for k in keys)
        load_after = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    first = next(r for r in rows if not r[0] and r[1] == "first load")
    cached = max(r[3] for r in rows if r[1] == "from cache")
    ok = exact and first[2] / first[3] >= first_target and cached <= cached_target
    text = render(rows, scan_s, digest_s, read_s, per_image, exact, first_target,
                  cached_target, load_before, load_after)  # fmt: skip
    write_text_atomic(DOC, text)
    print(f"digest {digest_s:.2f} s (scan {scan_s:.2f} s); bit-exact: {exact}; wrote {DOC}")
    return 0 if ok else 1


def render(
    rows: list,
    scan_s: float,
    digest_s: float,
    read_s: float,
    per_image: dict[bool, float],
    exact: bool,
    first_target: float,
    cached_target: float,
    load_before: str,
    load_after: str,
) -> str:
    table = "\n".join(
        f"| {'yes' if pre else 'no'} | {when} | {n:,} | {s:.2f} | {n / s:,.0f} |"
        for pre, when, n, s in rows
    )
    first = next(r for r in rows if not r[0] and r[1] == "first load")
    cached = max(r[3] for r in rows if r[1] == "from cache")
    return f"""# Data: loading a folder of digits

Written by `benchmarks/data_loading.py`; rerun it to refresh these numbers.

`load_source(FOLDER)` (`digitlab.data.source`) on MNIST's 60,000 training digits saved as
class folders `0/` ... `9/` of 28x28 PNG files: a first load decodes every file over a
process pool (one worker per usable core) and stores the result in the cache of sources
(`<digitlab home>/sources`); the next load of the unchanged folder hashes its files and
reads the cached arrays. With preprocessing every file goes through what `digitlab predict`
does to an image (`digitlab.preprocess.prepare`); without, the digits came back
{"bit-exact" if exact else "NOT bit-exact (a defect)"}.

## Machine

{describe("numpy", "pillow", "pyarrow")}
- {cpu_cores()} cores available to this process, shared with other programs
- load average before / after: {load_before} and {load_after} (1/5/15 min); other
  programs' load takes cores from the decoding workers, so first loads vary between runs

## Loading 60,000 PNG digits (wall clock, worker start included)

| preprocessing | load | images | seconds | images/s |
|---|---|---:|---:|---:|
{table}

Targets: a first load without preprocessing at least {first_target:,.0f} images/s (measured
**{first[2] / first[3]:,.0f}/s**); a load from the cache within {cached_target:g} s
(slowest measured **{cached:.2f} s**).

## What a load from the cache costs

Every load, hit or miss, first lists the folder ({scan_s:.2f} s for the 60,000 files) and
hashes each file's name, size and bytes ({digest_s:.2f} s, one core): the key is the content,
so an edited, added, removed or moved file is never served stale, whatever its time stamp
says. A miss hashes again after decoding and caches nothing if the folder changed
meanwhile. The cached arrays themselves (47 MB, an uncompressed `.npz`) read in
{read_s:.2f} s.

One process decodes a 28x28 PNG file in {per_image[False] * 1e6:.0f} µs; through
preprocessing (locating the ink, cropping, scaling to 20 px, centring by mass) it takes
{per_image[True] * 1e3:.1f} ms, which sets a first load's pace. Its result is cached like
the rest.
"""


if __name__ == "__main__":
    sys.exit(main())
