"""Facts about the cached MNIST: counts, class histogram, pixel statistics, digests."""

from __future__ import annotations

import os

import numpy as np

from digitlab.data.dataset import SPLITS, load_mnist, split_of


def data_info(cache_dir: str | os.PathLike | None = None, mirror: str | None = None) -> dict:
    """A JSON-able summary of every split; fetches the data first if it is not cached."""
    from digitlab.data.sources import fetch_mnist

    report = fetch_mnist(cache_dir, mirror)
    mnist = load_mnist(cache_dir, mirror)
    splits = {}
    for name in SPLITS:
        ds = split_of(mnist, name)
        pixels = ds.images.reshape(len(ds), -1)
        # float64 sums over uint8 stay exact enough for a 6-digit summary, and fast
        mean = float(pixels.mean(dtype=np.float64))
        std = float(np.sqrt((pixels.astype(np.float32) ** 2).mean(dtype=np.float64) - mean**2))
        splits[name] = {
            "count": len(ds),
            "class_counts": np.bincount(ds.labels, minlength=10).tolist(),
            "pixel_mean": round(mean, 4),
            "pixel_std": round(std, 4),
            "first_labels": ds.labels[:10].tolist(),
        }
    return {
        "cache_dir": str(report.cache_dir),
        "files": {name: {"sha256": d} for name, d in report.digests.items()},
        "splits": splits,
    }
