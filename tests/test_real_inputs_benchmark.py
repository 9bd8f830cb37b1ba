"""benchmarks/real_inputs.py, the script that measures the bundled model on realistic uploads:
its dev mode runs end to end on val digits, and number failures are sorted by what went wrong."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "real_inputs.py"


@pytest.fixture(scope="module")
def bench_module():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import real_inputs

        yield real_inputs
    finally:
        sys.path.remove(str(SCRIPT.parent))


@pytest.mark.parametrize(
    ("read", "why"),
    [
        (None, "not read"),
        ("205", "merged"),
        ("20261", "split"),
        ("2036", "misread"),
    ],
)
def test_number_failures_are_sorted_by_cause(bench_module, read: str | None, why: str) -> None:
    assert why in bench_module.number_failure("2026", read)


def test_time_per_number_is_not_moved_by_one_burst(bench_module) -> None:
    seconds = [0.020] * 100
    seconds[5] = 2.0  # another job took the core for two seconds
    assert bench_module.chunk_ms(seconds) == pytest.approx(20.0)  # the mean would say 39.8
    assert bench_module.chunk_ms([]) == 0.0


def test_val_split_writes_the_dev_doc(tmp_path: Path, digitlab_home: Path) -> None:
    out = tmp_path / "dev.md"
    args = ["--split", "val", "--n", "60", "--numbers", "10", "--non-digits", "30"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = out.read_text()
    assert "**Dev set**" in doc and "`val` digits" in doc
    single = re.search(r"single-digit accuracy \(60 uploads\) \| ([\d.]+)%", doc)
    assert single and float(single.group(1)) >= 90.0  # the bundled model reads val uploads
    numbers = re.search(r"exact numbers, 2-6 digits \(10\) \| ([\d.]+)%", doc)
    assert numbers is not None
    wrong = round(10 * (1 - float(numbers.group(1)) / 100))
    listed = sum(
        int(n)
        for n in re.findall(
            r"^\| (?:not read|digits merged|a digit \w+)[^|]* \| (\d+) \|$", doc, re.M
        )
    )
    assert listed == wrong  # every failed number is counted once, by its cause
    assert list(tmp_path.iterdir()) == [out]  # written atomically: no temporary file left
