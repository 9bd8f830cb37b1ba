"""Reproduce the tutorial systems: train each recipe in full, compare with the tutorial's figure.

    python benchmarks/reproduce.py                 # every tutorial recipe
    python benchmarks/reproduce.py caffe-lenet mxnet-mlp
    python benchmarks/reproduce.py --report-only   # rebuild docs/reproduction.md from runs

Each recipe trains into runs/reproduce/<recipe>; a finished run is reused (pass --fresh to
train again), so the table can be filled over several sittings. Writes docs/reproduction.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

TUTORIAL_RECIPES = [
    "paddle-softmax",
    "paddle-mlp",
    "mxnet-mlp",
    "mxnet-lenet-tanh",
    "gluon-lenet5",
    "paddle-cnn",
    "keras-fc",
    "keras-cnn",
    "caffe-lenet",
    "mxnet-lenet",
]
TOLERANCE = 0.003  # the tutorial's figure minus 0.3 points
NOTES_FILE = ROOT / "benchmarks" / "reproduce_notes.json"


def run_recipe(name: str, runs: Path, fresh: bool) -> dict:
    from digitlab.recipes import load_recipe
    from digitlab.train.loop import train

    run_dir = runs / name
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if (run_dir / "model.json").is_file():
        print(f"{name}: reusing finished run {run_dir}", flush=True)
    else:
        resume = (run_dir / "metrics.jsonl").exists()
        print(f"{name}: training into {run_dir}{' (resuming)' if resume else ''}", flush=True)
        train(load_recipe(name), run_dir, resume=resume, progress=False)
    return row_of(name, run_dir)


def row_of(name: str, run_dir: Path) -> dict:
    from digitlab.recipes import load_recipe

    recipe = load_recipe(name)
    meta = json.loads((run_dir / "model.json").read_text())
    m = meta["metrics"]
    target = recipe.target_accuracy
    ours = m["test_accuracy"]
    return {
        "recipe": name,
        "cites": recipe.cites,
        "target": target,
        "ours": ours,
        "delta": None if target is None else ours - target,
        "ok": None if target is None else ours >= target - TOLERANCE,
        "seconds": m["train_seconds"],
        "iterations": m["iterations"],
        "epochs": m["epochs"],
    }


def write_doc(rows: list[dict], path: Path) -> str:
    from digitlab.fileio import write_text_atomic

    notes = json.loads(NOTES_FILE.read_text()) if NOTES_FILE.is_file() else {}
    lines = [
        "# Reproducing the tutorial systems",
        "",
        "Written by `benchmarks/reproduce.py`. Each recipe in `recipes/` is trained in full on",
        "this machine with its tutorial's solver, and its MNIST test accuracy is compared with",
        "the figure the tutorial reports. A row passes when ours >= theirs - 0.3 points.",
        "Test accuracy is measured once at the end; no recipe selects anything on the test set.",
        "Training times are seconds of optimisation on two cores that other jobs shared while",
        "these runs trained (some ran several times slower than alone): read them as upper",
        "bounds, not as speed figures (those are in docs/benchmarks.md).",
        "",
        describe("torch", "numpy"),
        "",
        "| recipe | their figure | ours | difference | pass | training time | iterations |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        target = "-" if r["target"] is None else f"{r['target']:.2%}"
        delta = "-" if r["delta"] is None else f"{r['delta'] * 100:+.2f} pt"
        ok = "-" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        if r["ok"] is False and r["recipe"] in notes:
            ok += " (see note)"
        lines.append(
            f"| `{r['recipe']}` | {target} ({r['cites']}) | {r['ours']:.2%} | {delta} | {ok} "
            f"| {r['seconds'] / 60:.1f} min | {r['iterations']:,} ({r['epochs']:.1f} epochs) |"
        )
    explained = [r for r in rows if r["recipe"] in notes]
    if explained:
        lines += ["", "## Notes", ""]
        lines += [f"- `{r['recipe']}`: {notes[r['recipe']]}" for r in explained]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", default=TUTORIAL_RECIPES)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "reproduce")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reproduction.md")
    ap.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    ap.add_argument("--report-only", action="store_true", help="only tabulate finished runs")
    args = ap.parse_args()
    rows = []
    for name in args.recipes:
        if args.report_only:
            if (args.runs / name / "model.json").is_file():
                rows.append(row_of(name, args.runs / name))
        else:
            rows.append(run_recipe(name, args.runs, args.fresh))
    # keep rows of recipes not run this time but finished earlier
    done = {r["recipe"] for r in rows}
    for name in TUTORIAL_RECIPES:
        if name not in done and (args.runs / name / "model.json").is_file():
            rows.append(row_of(name, args.runs / name))
    order = {name: i for i, name in enumerate(TUTORIAL_RECIPES)}
    rows.sort(key=lambda r: order.get(r["recipe"], len(order)))
    print(write_doc(rows, args.out))


if __name__ == "__main__":
    main()
