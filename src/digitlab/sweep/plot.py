"""The picture of a sweep: a heatmap for a two-field grid, else the objective against each field.

Accuracy is shown in percent. A few diverged trials (10% accuracy beside 98%) would flatten
everything else, so the scale stops a few points below the best trial; cells and points beyond
it keep their true value in the label (heatmap) or sit on the axis edge as a triangle.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from digitlab.viz.plots import COLORS, figure_bytes, new_figure, style_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from digitlab.sweep.space import Axis
    from digitlab.sweep.spec import SweepResult

ACCURACY_WINDOW = 5.0  # heatmap colours span the best trial's accuracy minus this many points
SCATTER_WINDOW = 10.0  # scatter panels show at least this many points below the best


def sweep_png(result: SweepResult) -> bytes | None:
    """PNG bytes of the sweep's plot; None when no trial has a score yet."""
    spec = result.spec
    if not any(r["objective"] is not None for r in result.rows):
        return None
    if spec.kind == "grid" and len(spec.grid) == 2 and all(len(a.values) > 1 for a in spec.grid):
        fig = _heatmap(result)
    else:
        fig = _panels(result)
    return figure_bytes(fig, "png", dpi=110)


def _is_accuracy(result: SweepResult) -> bool:
    return result.spec.objective == "val_accuracy"


def _scaled(result: SweepResult, value: float | None) -> float | None:
    if value is None:
        return None
    return value * 100.0 if _is_accuracy(result) else value


def _label(result: SweepResult) -> str:
    return "validation accuracy (%)" if _is_accuracy(result) else "validation loss"


def _title(result: SweepResult, width_in: float, mark: str) -> str:
    """Two or three lines: what was swept, then the best trial; wrapped to the figure."""
    import textwrap

    spec = result.spec
    done = sum(r["state"] == "COMPLETE" for r in result.rows)
    pruned = sum(r["state"] == "PRUNED" for r in result.rows)
    what = f"{done} trials" + (f" + {pruned} pruned" if pruned else "")
    head = f"{spec.recipe}, {spec.kind} sweep: {what} ranked by {_label(result).split(' (')[0]}"
    chars = max(40, int(width_in * 13))
    return "\n".join(textwrap.wrap(head, chars) + textwrap.wrap(_best_text(result, mark), chars))


def _best_text(result: SweepResult, mark: str) -> str:
    from digitlab.sweep.space import show_value

    best = result.best
    if best is None:
        return "no finished trial"
    params = ", ".join(f"{k.rsplit('.', 1)[-1]} {show_value(v)}" for k, v in best["params"].items())
    value = _scaled(result, best["objective"])
    shown = f"{value:.2f}%" if _is_accuracy(result) else f"{value:.4f}"
    return f"best ({mark}): trial-{best['trial']:03d} ({params}) {shown}"


def _index(values: tuple[Any, ...], value: Any) -> int | None:
    from digitlab.sweep.space import format_value

    keys = [format_value(v) for v in values]
    key = format_value(value)
    return keys.index(key) if key in keys else None


# ----------------------------------------------------------------------------- heatmap


def _heatmap(result: SweepResult):
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    from digitlab.sweep.space import show_value

    xa, ya = result.spec.grid  # the first --grid runs across, the second up
    grid = np.full((len(ya.values), len(xa.values)), np.nan)
    notes: dict[tuple[int, int], str] = {}
    for r in result.rows:
        j, i = (
            _index(xa.values, r["params"].get(xa.key)),
            _index(ya.values, r["params"].get(ya.key)),
        )
        if i is None or j is None:
            continue
        value = _scaled(result, r["objective"])
        if r["state"] == "COMPLETE" and value is not None:
            grid[i, j] = value
        else:
            notes[(i, j)] = r["state"].lower()
    accuracy = _is_accuracy(result)
    finite = grid[np.isfinite(grid)]
    best = finite.max() if accuracy else finite.min()
    if accuracy:
        lo, hi, extend = max(finite.min(), best - ACCURACY_WINDOW), best, "neither"
        extend = "min" if finite.min() < lo else extend
    else:
        lo, hi = best, min(finite.max(), best * 3)
        extend = "max" if finite.max() > hi else "neither"
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    cmap = colormaps["viridis" if accuracy else "viridis_r"].with_extremes(bad="0.85")
    norm = Normalize(lo, hi, clip=True)

    width = min(14.0, max(6.4, 2.8 + 1.25 * len(xa.values)))
    height = min(10.0, 2.2 + 0.85 * len(ya.values))
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="lower", aspect="auto"
    )
    colors = image.cmap(norm(np.nan_to_num(grid, nan=lo)))
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                text = f"{grid[i, j]:.2f}" if accuracy else f"{grid[i, j]:.4f}"
                r, g, b, _ = colors[i, j]
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"
            else:
                text, ink = notes.get((i, j), "missing"), "0.3"
            weight = "bold" if np.isfinite(grid[i, j]) and grid[i, j] == best else "normal"
            ax.text(j, i, text, ha="center", va="center", color=ink, fontsize=10, weight=weight)
    bi, bj = np.argwhere(grid == best)[0]
    ax.add_patch(
        Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="#D55E00", linewidth=2.5)
    )
    ax.set_xticks(range(len(xa.values)), [show_value(v) for v in xa.values])
    ax.set_yticks(range(len(ya.values)), [show_value(v) for v in ya.values])
    ax.set_xlabel(xa.key)
    ax.set_ylabel(ya.key)
    ax.set_title(_title(result, width, "outlined"), fontsize=10.5, loc="left")
    for side in ax.spines.values():
        side.set_visible(False)
    bar = fig.colorbar(image, ax=ax, extend=extend, shrink=0.9)
    bar.set_label(_label(result))
    return fig


# ----------------------------------------------------------------------------- panels


def _numeric(axis: Axis) -> bool:
    values = axis.values if not axis.is_range else (axis.low, axis.high)
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _log_scale(axis: Axis, xs: list[float]) -> bool:
    if axis.log:
        return True
    positive = [x for x in xs if x > 0]
    return len(positive) == len(xs) > 1 and max(positive) / min(positive) >= 20


def _panels(result: SweepResult):
    spec = result.spec
    n = len(spec.axes)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    width = max(6.4, 4.4 * cols + 0.4)
    fig = new_figure(width, 3.5 * rows + 1.1)
    accuracy = _is_accuracy(result)
    scored = [_scaled(result, r["objective"]) for r in result.rows if r["objective"] is not None]
    best = max(scored) if accuracy else min(scored)
    floor = None
    if accuracy:  # room for the typical trial (1.5 x best-to-median), not for diverged ones
        done = sorted(
            _scaled(result, r["objective"])
            for r in result.rows
            if r["state"] == "COMPLETE" and r["objective"] is not None
        )
        typical = done[len(done) // 2] if done else best
        floor = max(min(scored), best - max(SCATTER_WINDOW, 1.5 * (best - typical)))
    for k, axis in enumerate(spec.axes):
        ax = fig.add_subplot(rows, cols, k + 1)
        _panel(ax, result, axis, best, floor)
        if k % cols:
            ax.set_ylabel("")
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(_title(result, width, "star"), fontsize=10.5, x=0.02, ha="left")
    return fig


def _panel(ax: Axes, result: SweepResult, axis: Axis, best: float, floor: float | None) -> None:
    from digitlab.sweep.space import show_value

    numeric = _numeric(axis)
    finished: list[tuple[float, float]] = []
    pruned: list[tuple[float, float]] = []
    best_point = None
    for r in result.rows:
        value = _scaled(result, r["objective"])
        if value is None or axis.key not in r["params"]:
            continue
        raw = r["params"][axis.key]
        x = float(raw) if numeric else _index(axis.values, raw)
        if x is None:
            continue
        point = (x, value)
        if r["state"] == "COMPLETE":
            finished.append(point)
            if r is result.best:
                best_point = point
        else:
            pruned.append(point)
    below = floor if floor is not None else -math.inf

    def clip(points: list[tuple[float, float]]) -> tuple[list, list, list, list]:
        kept = [(x, y) for x, y in points if y >= below]
        cut = [(x, below) for x, y in points if y < below]
        return [p[0] for p in kept], [p[1] for p in kept], [p[0] for p in cut], [p[1] for p in cut]

    if result.spec.kind == "grid" and finished:  # the best trial at each value, joined
        by_x: dict[float, float] = {}
        for x, y in finished:
            keep = max if _is_accuracy(result) else min
            by_x[x] = keep(by_x.get(x, y), y)
        xs = sorted(by_x)
        ys = [max(by_x[x], below) for x in xs]
        ax.plot(xs, ys, color=COLORS[0], linewidth=1.2, alpha=0.6, label="best at each value")
    fx, fy, cx, cy = clip(finished)
    ax.scatter(fx, fy, s=36, color=COLORS[0], alpha=0.85, label="finished", zorder=3)
    if cx:
        ax.scatter(cx, cy, s=40, marker="v", color=COLORS[0], label="below the axis", zorder=3)
    if pruned:
        px, py, pcx, pcy = clip(pruned)
        hollow = {"s": 36, "facecolors": "none", "edgecolors": "0.45", "zorder": 2}
        if px:
            ax.scatter(px, py, label="pruned (last score)", **hollow)
        if pcx:
            ax.scatter(pcx, pcy, marker="v", label="pruned, below the axis", **hollow)
    if best_point is not None:
        ax.scatter(*best_point, s=160, marker="*", color="#D55E00", label="best", zorder=4)
    style_axes(ax, axis.key, _label(result))
    if numeric:
        xs_all = [p[0] for p in finished + pruned]
        if _log_scale(axis, xs_all):
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if not axis.is_range and len(axis.values) <= 12:
            ax.set_xticks([float(v) for v in axis.values], [show_value(v) for v in axis.values])
            ax.minorticks_off()
    else:
        ax.set_xticks(range(len(axis.values)), [show_value(v) for v in axis.values])
        ax.set_xlim(-0.5, len(axis.values) - 0.5)
    if floor is not None:
        top = best + 0.08 * max(best - floor, 0.5)
        ax.set_ylim(floor - 0.04 * max(best - floor, 0.5), top)
