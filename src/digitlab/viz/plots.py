"""Training curves from runs' metrics.jsonl: Caffe's eight plot kinds, several runs overlaid.

Caffe's ``tools/extra/plot_training_log.py`` draws test accuracy, test loss, learning rate
and train loss against iterations or seconds. Caffe's "test" net is the validation net, so
"test" here means our ``val`` events. A run still in progress plots what it has so far.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError
from digitlab.fileio import write_bytes_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class PlotKind:
    """One curve: which events (phase), which field against which axis, and the labels."""

    phase: str
    y: str
    x: str
    ylabel: str
    title: str

    @property
    def xlabel(self) -> str:
        return "iterations" if self.x == "iter" else "training time (seconds)"


def _kinds() -> dict[str, PlotKind]:
    kinds = {}
    for xname, x in (("iters", "iter"), ("seconds", "elapsed")):
        kinds[f"test-acc-vs-{xname}"] = PlotKind(
            "val", "accuracy", x, "validation accuracy (%)", "Validation accuracy"
        )
        kinds[f"test-loss-vs-{xname}"] = PlotKind(
            "val", "loss", x, "validation loss (cross-entropy)", "Validation loss"
        )
        kinds[f"lr-vs-{xname}"] = PlotKind("train", "lr", x, "learning rate", "Learning rate")
        kinds[f"train-loss-vs-{xname}"] = PlotKind(
            "train", "loss", x, "training loss (cross-entropy)", "Training loss"
        )
    return dict(sorted(kinds.items()))


KINDS: dict[str, PlotKind] = _kinds()
FORMATS = (".png", ".svg")

# Colour-blind-safe (Okabe-Ito) colours for overlaid runs.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]


def run_events(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of one run folder; a missing folder or an empty log is a user error."""
    from digitlab.train.runlog import METRICS, read_metrics

    run = Path(run_dir)
    if not run.is_dir():
        raise DigitlabError(f"{run}: no such run folder")
    if not (run / METRICS).is_file():
        raise DigitlabError(f"{run}: no {METRICS} here; pass a folder made by `digitlab train`")
    events = read_metrics(run)
    if not events:
        raise DigitlabError(f"{run / METRICS} holds no events yet; wait for the first log line")
    return events


def series(events: list[dict[str, Any]], kind: PlotKind) -> tuple[list[float], list[float]]:
    """(x, y) of one kind; accuracy becomes percent."""
    scale = 100.0 if kind.y == "accuracy" else 1.0
    points = [
        (float(e[kind.x]), float(e[kind.y]) * scale)
        for e in events
        if e.get("phase") == kind.phase and kind.x in e and e.get(kind.y) is not None
    ]
    return [p[0] for p in points], [p[1] for p in points]


def run_labels(runs: list[str | os.PathLike]) -> list[str]:
    """Legend labels: run folder names, or the paths as given when two names collide."""
    names = [Path(r).resolve().name for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def draw_kind(
    ax: Axes, runs: list[tuple[str, list[dict[str, Any]]]], kind: PlotKind, title: bool = True
) -> int:
    """Draw one kind for each (label, events) on ``ax``; returns how many runs had points."""
    drawn = 0
    for i, (label, events) in enumerate(runs):
        xs, ys = series(events, kind)
        if not xs:
            continue
        sparse = len(xs) <= 40
        ax.plot(
            xs,
            ys,
            color=COLORS[i % len(COLORS)],
            marker="o" if sparse else None,
            markersize=3.5,
            linewidth=1.6,
            label=label,
        )
        drawn += 1
    style_axes(ax, kind.xlabel, kind.ylabel, kind.title if title else None)
    if kind.y == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return drawn


def style_axes(ax: Axes, xlabel: str, ylabel: str, title: str | None = None) -> None:
    """Light grid, no top/right frame, labelled axes: the look every digitlab chart shares."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=12, loc="left")
    ax.grid(True, color="0.88", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("0.6")


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg without touching pyplot's global state (safe in servers, tests)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white", metadata=_no_dates(fmt))
    return buf.getvalue()


def _no_dates(fmt: str) -> dict[str, Any]:
    # Leave out the creation date (SVG) and the software URL (PNG): reproducible bytes, and a
    # report that embeds the PNG holds no web address at all.
    return {"Date": None} if fmt == "svg" else {"Software": None}


def plot_runs(
    runs: list[str | os.PathLike], kind: str, out: str | os.PathLike | None = None
) -> Path:
    """Draw ``kind`` for every run into ``out`` (.png or .svg; default ``<kind>.png``)."""
    if kind not in KINDS:
        raise DigitlabError(f"unknown plot kind {kind!r}; kinds: {', '.join(KINDS)}")
    if not runs:
        raise DigitlabError("give at least one run folder")
    out = Path(out if out is not None else f"{kind}.png").expanduser()
    if out.suffix.lower() not in FORMATS:
        raise DigitlabError(f"{out}: plots are written as .png or .svg; change the file name")
    if out.is_dir():
        raise DigitlabError(f"{out} is a folder; give a file name such as {kind}.png")
    spec = KINDS[kind]
    loaded = list(zip(run_labels(runs), [run_events(r) for r in runs], strict=True))
    fig = new_figure(8.0, 4.8)
    ax = fig.add_subplot()
    if draw_kind(ax, loaded, spec) == 0:
        what = "validation" if spec.phase == "val" else spec.phase
        raise DigitlabError(
            f"no {what} events to plot in {', '.join(map(str, runs))}"
            + (" (the recipe has no validation split)" if spec.phase == "val" else "")
        )
    if len(loaded) > 1:
        ax.legend(frameon=False, title="run")
    try:
        write_bytes_atomic(out, figure_bytes(fig, out.suffix.lower()[1:]))
    except OSError as exc:
        raise DigitlabError(f"cannot write {out}: {exc.strerror}") from None
    return out
