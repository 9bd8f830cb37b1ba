"""A sweep's results: the trials best first, written as results.json and results.csv with the
plot sweep.png, and as rows for a printed table."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from digitlab.fileio import write_bytes_atomic, write_text_atomic
from digitlab.sweep.space import short_key, show_value
from digitlab.sweep.spec import (
    DIRECTIONS,
    PLOT_FILE,
    RESULTS_CSV,
    RESULTS_JSON,
    Objective,
    SweepResult,
    SweepSpec,
)
from digitlab.sweep.study import storage_url, study_name
from digitlab.sweep.trials import METRIC_KEYS

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def sort_rows(rows: list[dict[str, Any]], objective: Objective) -> list[dict[str, Any]]:
    """Finished trials best first, then pruned ones by their last score, then the rest."""
    sign = -1.0 if DIRECTIONS[objective] == "maximize" else 1.0

    def key(row: dict[str, Any]) -> tuple:
        state = STATES.index(row["state"]) if row["state"] in STATES else len(STATES)
        value = row["objective"]
        return (state, value is None, sign * value if value is not None else 0.0, row["trial"])

    return sorted(rows, key=key)


def write_results(spec: SweepSpec, rows: list[dict[str, Any]]) -> SweepResult:
    """results.json, results.csv and sweep.png in the sweep folder, each written atomically."""
    from digitlab.sweep.plot import sweep_png

    result = SweepResult(spec, sort_rows(rows, spec.objective))
    doc = {
        **spec.identity(),
        "direction": DIRECTIONS[spec.objective],
        "selected_on": "validation data only; test accuracy is reported, never used to choose",
        "best": result.best,
        "trials": result.rows,
    }
    if spec.kind == "optuna":
        doc.update(storage=_hide_password(storage_url(spec)), study=study_name(spec))
    out = spec.out
    write_text_atomic(out / RESULTS_JSON, json.dumps(doc, indent=2) + "\n")
    write_text_atomic(out / RESULTS_CSV, results_csv(spec, result.rows))
    result.files = [out / RESULTS_JSON, out / RESULTS_CSV]
    png = sweep_png(result)
    if png is not None:
        write_bytes_atomic(out / PLOT_FILE, png)
        result.files.append(out / PLOT_FILE)
    return result


def _hide_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.partition(':')[0]}:***@{tail}"


def results_csv(spec: SweepSpec, rows: list[dict[str, Any]]) -> str:
    keys = [a.key for a in spec.axes]
    columns = ["rank", "trial", "state", *keys, "objective", *METRIC_KEYS, "run", "error"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rank, row in enumerate(rows, 1):
        params = [row["params"].get(k, "") for k in keys]
        rest = [row[k] for k in ("objective", *METRIC_KEYS, "run", "error")]
        writer.writerow([rank, row["trial"], row["state"], *params, *rest])
    return buf.getvalue()


def table(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    """The results as printable columns and rows, best first (for the CLI's table)."""
    spec = result.spec
    keys = [a.key for a in spec.axes]
    header = [
        "#", "trial", "state", *[short_key(k, spec.axes) for k in keys],
        "val acc", "val loss", "test acc*", "epochs", "train s",
    ]  # fmt: skip
    body = []
    for rank, r in enumerate(result.rows, 1):
        body.append(
            [
                str(rank),
                f"{r['trial']:03d}",
                r["state"].lower(),
                *[show_value(r["params"][k]) if k in r["params"] else "" for k in keys],
                _fmt(r["val_accuracy"], "{:.2%}"),
                _fmt(r["val_loss"], "{:.4f}"),
                _fmt(r["test_accuracy"], "{:.2%}"),
                _fmt(r["epochs"], "{:.1f}"),
                _fmt(r["train_seconds"], "{:.1f}"),
            ]
        )
    return header, body


def _fmt(value: Any, pattern: str) -> str:
    return "" if value is None else pattern.format(value)
