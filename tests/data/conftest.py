"""Fixtures for the data-source tests: real MNIST digits and a private source cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digitlab.data.dataset import Dataset


@pytest.fixture(scope="session")
def digits(mnist) -> Dataset:
    """200 real test digits, every class present."""
    return mnist["test"].subset(slice(0, 200), "digits")


@pytest.fixture
def source_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """An empty cache of decoded sources for one test (MNIST's own cache is still shared)."""
    home = tmp_path_factory.mktemp("home")
    mnist = Path(os.environ["DIGITLAB_HOME"]) / "mnist"
    if mnist.is_dir():
        (home / "mnist").symlink_to(mnist)
    monkeypatch.setenv("DIGITLAB_HOME", str(home))
    return home / "sources"
