"""The built wheel works on its own: the bundled model, the page's files and the recipes are
inside it, so ``import digitlab; digitlab.read(...)`` and recipes by name work installed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without dependencies) into a folder
    that is put first on the path, so it and not the checkout is what gets imported."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    wheel = next(out.glob("digitlab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "digitlab/recipes_data/fast.toml" in names
    assert "digitlab/assets/model/model.safetensors" in names
    target = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    return target


def _run(target: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=300,
    )  # fmt: skip


def test_the_installed_wheel_reads_a_digit_and_finds_recipes_by_name(installed, mnist, tmp_path):
    seven = mnist["test"].images[np.flatnonzero(mnist["test"].labels == 7)[0]]
    Image.fromarray(255 - seven).save(tmp_path / "x.png")
    r = _run(
        installed,
        "import digitlab; print(digitlab.__file__); print(digitlab.read('x.png'))\n"
        "print(digitlab.recipe('caffe-lenet').model.name)",
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    where, reading, model = r.stdout.splitlines()
    assert where.startswith(str(installed))  # the wheel's copy, not the checkout
    assert reading.startswith("DigitReading(digit=7,") and "is_digit=True" in reading
    assert model == "lenet-caffe"
