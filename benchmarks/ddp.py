"""Training samples/s for one process and for several data-parallel workers on this machine.

Each configuration is a real ``digitlab train`` command (``--nproc N`` for the workers), run
in interleaved rounds so that load from other programs falls on all of them alike; samples/s
comes from the run's own metrics.jsonl (training steps only, the first log interval left out
as warm-up), and the job's wall time, start-up included, is reported beside it. Writes its
section of docs/benchmarks.md, between ``<!-- ddp:start -->`` and ``<!-- ddp:end -->``.

    python benchmarks/ddp.py [--iters 300] [--rounds 2] [--nproc 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digitlab.system import cpu_cores
from digitlab.train.runlog import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, replace_section  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

RECIPE = """
name = "ddp-bench"
seed = 0
[model]
name = "{model}"
[data]
train_split = "train50k"
batch_size = {batch}
[solver]
optimizer = "sgd"
lr = 0.01
momentum = 0.9
[train]
iters = {iters}
val_interval = 1000000
log_interval = {log_every}
"""

MODELS = [("lenet-caffe", 64), ("mlp", 128)]  # Caffe's LeNet batch; a cheap dense model


def run_once(recipe: Path, batch: int, out: Path, nproc: int, threads: int) -> tuple[float, float]:
    """(training samples/s after the first log interval, wall seconds of the whole job)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [sys.executable, "-m", "digitlab", "train", str(recipe), "--out", str(out)]
    cmd += ["--nproc", str(nproc), "--threads", str(threads), "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t0
    events = [e for e in read_metrics(out) if e["phase"] == "train"]
    samples = seconds = 0.0
    for before, e in zip(events, events[1:], strict=False):
        n = (e["iter"] - before["iter"]) * batch
        samples, seconds = samples + n, seconds + n / e["samples_per_s"]
    return samples / seconds, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300, help="iterations per run [300]")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds [2]")
    parser.add_argument("--nproc", type=int, default=2, help="workers to compare with 1 [2]")
    args = parser.parse_args()

    cores = cpu_cores()
    per_worker = max(1, cores // args.nproc)
    all_cores, one_worker, workers = (1, cores), (1, per_worker), (args.nproc, per_worker)
    configs = list(dict.fromkeys([all_cores, one_worker, workers]))
    load_before = os.getloadavg()[0]
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model, batch in MODELS:
            recipe = Path(tmp) / f"{model}.toml"
            log_every = max(1, args.iters // 6)
            recipe.write_text(
                RECIPE.format(model=model, batch=batch, iters=args.iters, log_every=log_every)
            )
            runs: dict[tuple[int, int], list[tuple[float, float]]] = {c: [] for c in configs}
            for r in range(args.rounds):
                for nproc, threads in configs:
                    out = Path(tmp) / f"{model}-{nproc}x{threads}-{r}"
                    runs[(nproc, threads)].append(run_once(recipe, batch, out, nproc, threads))
                    print(model, nproc, threads, runs[(nproc, threads)][-1], file=sys.stderr)
            sps = {c: statistics.median(s for s, _ in runs[c]) for c in configs}
            for c in configs:
                wall = statistics.median(w for _, w in runs[c])
                rows.append(
                    f"| {model} | {batch} | {c[0]} × {c[1]} | {sps[c]:,.0f} | "
                    f"{sps[c] / sps[all_cores]:.2f} | {sps[c] / sps[one_worker]:.2f} | {wall:.1f} |"
                )
            notes.append(
                f"- {model}: {args.nproc} workers ran at {sps[workers] / sps[all_cores]:.2f}x one "
                f"process with {cores} threads and {sps[workers] / sps[one_worker]:.2f}x one "
                f"process with {per_worker}."
            )
            if sps[all_cores] < sps[one_worker]:
                notes[-1] += (
                    f" One process ran slower on {cores} threads than on {per_worker}: with more "
                    "runnable programs than cores, its threads wait for each other at every "
                    "parallel region."
                )
    load_after = os.getloadavg()[0]

    body = "\n".join(
        [
            "## Data-parallel training (`digitlab train --nproc N`)",
            "",
            "Written by `benchmarks/ddp.py`; rerun it to refresh these numbers. Each row is a real",
            f"`digitlab train` run of {args.iters} iterations on train50k, median of {args.rounds}",
            "interleaved rounds. Samples/s counts training steps only (no validation), from the",
            "run's metrics.jsonl, leaving out the first log interval as warm-up; job seconds",
            "include starting Python, torch and the workers. The batch is the global one: each of",
            "N workers takes 1/N of it and DistributedDataParallel (gloo) averages the gradients,",
            "so the trained weights match one process (`tests/train/test_distributed.py`).",
            "",
            describe("torch"),
            f"- {cores} cores available to this process; 1-minute load average {load_before:.2f}"
            f" before, {load_after:.2f} after (the machine is shared with other programs)",
            "",
            f"| model | batch | processes × threads | samples/s | x 1 × {cores} | "
            f"x 1 × {per_worker} | job seconds |",
            "|---|---:|---|---:|---:|---:|---:|",
            *rows,
            "",
            *notes,
            "",
            f"With {cores} cores, {args.nproc} workers share the same cores as one process and add",
            "a gradient all-reduce and smaller per-worker batches to every step, so expect no",
            "gain here; the point is correctness and the way to more machines (see the README).",
        ]
    )
    replace_section(DOC, "ddp", body, title="# Benchmarks")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
