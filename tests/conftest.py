"""Shared fixtures: the real MNIST, fetched once per session through the real downloader
from the shared mirror (``$DIGITLAB_MNIST_MIRROR`` or ``../shared/data/mnist``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def _mirror() -> str:
    env = os.environ.get("DIGITLAB_MNIST_MIRROR")
    if env:
        return env
    if (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        return str(SHARED_MNIST)
    pytest.exit("no MNIST mirror: set DIGITLAB_MNIST_MIRROR or put ../shared/data/mnist beside")


@pytest.fixture(scope="session")
def mnist_mirror() -> str:
    """A local mirror folder holding the four canonical files."""
    return _mirror()


@pytest.fixture(scope="session", autouse=True)
def digitlab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and every CLI subprocess) uses a private cache filled from the mirror."""
    home = tmp_path_factory.mktemp("digitlab-home")
    os.environ["DIGITLAB_HOME"] = str(home)
    os.environ["DIGITLAB_MNIST_MIRROR"] = _mirror()
    return home


@pytest.fixture(scope="session")
def mnist(digitlab_home: Path) -> dict:
    """The original train/test :class:`~digitlab.data.dataset.Dataset` pair."""
    from digitlab.data.dataset import load_mnist

    return load_mnist()


def run_cli(
    *args: str, input: bytes | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``digitlab ARGS`` in a real subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "digitlab", *args],
        capture_output=True,
        input=input,
        timeout=timeout,
        env=os.environ.copy(),
    )


@pytest.fixture
def cli():
    return run_cli
