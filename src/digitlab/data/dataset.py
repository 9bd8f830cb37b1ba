"""MNIST as in-memory uint8 arrays, and the splits every tutorial uses.

Images stay uint8 (47 MB for all 60k training digits) until a batch is drawn; the
training loop normalises on the fly, so no per-sample Python work ever happens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from digitlab.data.idx import read_idx
from digitlab.data.sources import MNIST_FILES, fetch_mnist
from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    import torch

SPLITS: dict[str, str] = {
    "train": "all 60,000 training digits",
    "test": "the 10,000 test digits",
    "train50k": "the first 50,000 training digits (the book's mnist.pkl.gz train set)",
    "val": "the last 10,000 training digits (the book's mnist.pkl.gz validation set)",
}


@dataclass
class Dataset:
    """Images (N,28,28) uint8 with 0 = background and 255 = ink, and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray
    name: str = "dataset"
    digests: dict[str, str] = field(default_factory=dict)
    num_classes: int = 10  # 11 with a "not a digit" class
    skipped: tuple[str, ...] = ()  # why each unreadable image of a user's source was left out

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise DigitlabError(f"{self.name}: images must be uint8 of shape (N,28,28)")
        if self.images.shape[1:] != (28, 28):
            raise DigitlabError(f"{self.name}: images are {self.images.shape[1:]}, not 28x28")
        if self.labels.shape != (self.images.shape[0],):
            raise DigitlabError(
                f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise DigitlabError(f"{self.name}: labels must lie in 0-{self.num_classes - 1}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: slice | np.ndarray, name: str | None = None) -> Dataset:
        return Dataset(
            self.images[index], self.labels[index], name or self.name, self.digests,
            self.num_classes,
        )  # fmt: skip

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-copy torch views of the arrays."""
        import torch

        return torch.from_numpy(self.images), torch.from_numpy(self.labels)


def concat(a: Dataset, b: Dataset, name: str) -> Dataset:
    """Two sets as one (the larger class count of the two)."""
    return Dataset(
        np.concatenate([a.images, b.images]),
        np.concatenate([a.labels, b.labels]).astype(np.int64),
        name,
        {**a.digests, **b.digests},
        max(a.num_classes, b.num_classes),
        a.skipped + b.skipped,
    )


def load_mnist(
    cache_dir: str | os.PathLike | None = None, mirror: str | None = None
) -> dict[str, Dataset]:
    """The original train (60k) and test (10k) sets, fetched into the cache if needed."""
    report = fetch_mnist(cache_dir, mirror)
    arrays = {spec.name: read_idx(report.cache_dir / spec.name) for spec in MNIST_FILES}
    train = Dataset(
        arrays["train-images-idx3-ubyte.gz"],
        arrays["train-labels-idx1-ubyte.gz"],
        "train",
        {k: v for k, v in report.digests.items() if k.startswith("train")},
    )
    test = Dataset(
        arrays["t10k-images-idx3-ubyte.gz"],
        arrays["t10k-labels-idx1-ubyte.gz"],
        "test",
        {k: v for k, v in report.digests.items() if k.startswith("t10k")},
    )
    return {"train": train, "test": test}


def split_of(mnist: dict[str, Dataset], split: str) -> Dataset:
    """One named split from the original sets; ``val`` is exactly mnist.pkl.gz's validation."""
    if split not in SPLITS:
        raise DigitlabError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split in ("train", "test"):
        return mnist[split]
    train = mnist["train"]
    if split == "train50k":
        return train.subset(slice(0, 50000), "train50k")
    return train.subset(slice(50000, 60000), "val")


def load_split(
    split: str, cache_dir: str | os.PathLike | None = None, mirror: str | None = None
) -> Dataset:
    """One split by name (``train``, ``test``, ``train50k``, ``val``)."""
    if split not in SPLITS:
        raise DigitlabError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split_of(load_mnist(cache_dir, mirror), split)
