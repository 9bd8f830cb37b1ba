"""The run report: one self-contained HTML file that says what a run did and how well.

Everything is inline — CSS, charts as base64 PNG, digits as tiny PNGs — and nothing refers
to the network (no fonts, no scripts, no CDN), so the file can be mailed, archived or opened
offline. Sections carry stable ids (recipe, curves, confusion, per-class, samples, mistakes,
model-summary, timings, data) for tests and for linking. A run still in progress gets the
sections that need no finished model; the others say the model is not written yet.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.fileio import write_text_atomic
from digitlab.viz import plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT = "report.html"
N_MISTAKES = 16
SECTIONS = {
    "recipe": "Recipe",
    "curves": "Training curves",
    "confusion": "Confusion matrix (test)",
    "per-class": "Per-class precision, recall and F1 (test)",
    "samples": "Random test digits",
    "mistakes": "Most confident mistakes (test)",
    "model-summary": "Model summary",
    "timings": "Timings",
    "data": "Data",
}


@dataclass
class TestResults:
    """The finished model on the test split: metrics, predictions and their confidences."""

    metrics: dict[str, Any]
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray


def write_report(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, seed: int = 0
) -> Path:
    """Write the HTML report of ``run_dir`` (default ``RUN/report.html``, atomically)."""
    run = Path(run_dir)
    events = plots.run_events(run)  # also checks that the run folder exists and has events
    target = Path(out).expanduser() if out is not None else run / REPORT
    if target.is_dir():
        raise DigitlabError(f"{target} is a folder; give a file name such as report.html")
    page = render_report(run, events, seed)
    try:
        write_text_atomic(target, page)
    except OSError as exc:
        raise DigitlabError(f"cannot write {target}: {exc.strerror}") from None
    return target


def render_report(run: Path, events: list[dict[str, Any]], seed: int = 0) -> str:
    """The whole page as a string."""
    recipe, recipe_text = _read_recipe(run)
    meta, model = _read_model(run)
    results = _evaluate(model, meta) if model is not None else None
    arch = meta.architecture if meta else recipe.get("model", {}).get("name", "?")
    if model is None:
        from digitlab.models import create_model

        model = create_model(arch, **recipe.get("model", {}).get("options", {}))
    from digitlab.summary import summarize, totals

    layers = summarize(model)
    ops = totals(layers)
    no_model = _note("No model yet: the run is still training (or stopped before the end).")
    body = [
        _header(run, arch, meta, results, events, ops),
        _section("recipe", _recipe_html(recipe, recipe_text)),
        _section("curves", _img(_curves_figure(events), "training curves")),
        _row(
            "confusion",
            _section("confusion", _confusion_html(results) if results else no_model),
            _section("per-class", _per_class_html(results) if results else no_model),
        ),
        _row(
            "gallery",
            _section("samples", _samples_html(results, seed) if results else no_model),
            _section("mistakes", _mistakes_html(results) if results else no_model),
        ),
        _section("model-summary", _summary_html(layers, ops)),
        _row(
            "facts",
            _section("timings", _timings_html(meta, events, ops, recipe)),
            _section("data", _data_html(meta, recipe)),
        ),
    ]
    title = f"digitlab report: {run.resolve().name}"
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + f"\n<footer>made by digitlab on {time.strftime('%Y-%m-%d %H:%M')}</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------- inputs


def _read_recipe(run: Path) -> tuple[dict[str, Any], str]:
    """The run's recipe.toml, parsed and as text (the report shows both)."""
    path = run / "recipe.toml"
    if not path.is_file():
        raise DigitlabError(f"{run}: no recipe.toml here; pass a folder made by `digitlab train`")
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise DigitlabError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DigitlabError(f"{path}: cannot read ({exc})") from None


def _read_model(run: Path) -> tuple[Any, Any]:
    from digitlab.artifact import META, load_artifact

    if not (run / META).is_file():
        return None, None
    model, meta = load_artifact(run)
    return meta, model


def _evaluate(model: Any, meta: Any) -> TestResults:
    """The model on its run's test source (MNIST test unless the recipe named another)."""
    import torch

    from digitlab.data.source import load_source
    from digitlab.evaluate import batched_logits, metrics_from_logits
    from digitlab.models.registry import Normalization

    data = (meta.recipe or {}).get("data", {})
    test = load_source(data.get("test_split", "test"), preprocess=data.get("preprocess", True))
    images, labels = test.tensors()
    logits = batched_logits(model, images, Normalization(*meta.normalization).apply)
    probs = torch.softmax(logits, 1)
    conf, pred = probs.max(1)
    return TestResults(
        metrics_from_logits(logits, labels),
        images.numpy().reshape(-1, 28, 28),
        labels.numpy(),
        pred.numpy(),
        conf.numpy(),
    )


# ---------------------------------------------------------------------------- html pieces


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(sid: str, inner: str) -> str:
    return f"<section id='{sid}'>\n<h2>{_e(SECTIONS[sid])}</h2>\n{inner}\n</section>"


def _row(kind: str, left: str, right: str) -> str:
    """Two sections side by side on a wide screen, stacked on a narrow one."""
    return f"<div class='row {kind}'>\n{left}\n{right}\n</div>"


def _note(text: str) -> str:
    return f"<p class='note'>{_e(text)}</p>"


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(fig: Figure, alt: str, width: int | None = None) -> str:
    style = f" style='max-width:{width}px'" if width else ""
    png = plots.figure_bytes(fig, "png", dpi=110)
    return f"<img class='chart' alt='{_e(alt)}' src='{_png_uri(png)}'{style}>"


def _digit_uri(image: np.ndarray, zoom: int = 3) -> str:
    """A 28x28 digit as dark ink on white, enlarged with hard pixel edges."""
    from PIL import Image

    im = Image.fromarray(255 - image.astype(np.uint8), "L")
    im = im.resize((28 * zoom, 28 * zoom), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return _png_uri(buf.getvalue())


def _kv_table(rows: list[tuple[str, str]], cls: str = "kv") -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='{cls}'>{cells}</table>"


def _header(
    run: Path,
    arch: str,
    meta: Any,
    results: TestResults | None,
    events: list[dict[str, Any]],
    ops: dict[str, int],
) -> str:
    from digitlab.summary import format_count

    last = events[-1]
    tiles = []
    if results is not None:
        tiles.append(("test accuracy", f"{results.metrics['accuracy']:.2%}"))
        tiles.append(("test loss", f"{results.metrics['loss']:.4f}"))
    else:
        val = [e for e in events if e.get("phase") == "val"]
        if val:
            tiles.append(("val accuracy (so far)", f"{val[-1]['accuracy']:.2%}"))
    tiles += [
        ("iterations", f"{last.get('iter', 0):,}"),
        ("training time", f"{float(last.get('elapsed', 0)):.1f} s"),
        ("parameters", f"{ops['params']:,}"),
        ("FLOPs / image", format_count(ops["flops"])),
    ]
    cards = "".join(
        f"<div class='tile'><div class='v'>{_e(v)}</div><div class='k'>{_e(k)}</div></div>"
        for k, v in tiles
    )
    status = "finished" if meta else "in progress"
    toc = " · ".join(f"<a href='#{sid}'>{_e(t.split(' (')[0])}</a>" for sid, t in SECTIONS.items())
    folder = os.path.relpath(run.resolve())  # a shared report should not show a home path
    if folder.startswith(".."):
        folder = str(run.resolve())
    return (
        f"<header><h1>{_e(run.resolve().name)}</h1>"
        f"<p class='sub'>model <b>{_e(arch)}</b> · run {status} · folder {_e(folder)}</p>"
        f"<div class='tiles'>{cards}</div><nav>{toc}</nav></header>"
    )


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def _recipe_html(recipe: dict[str, Any], text: str) -> str:
    prose = ("description", "cites")
    top = [
        (k, _e(_fmt_value(v)))
        for k, v in recipe.items()
        if not isinstance(v, dict) and k not in prose
    ]
    about = "".join(
        f"<p class='about'><b>{k}:</b> {_e(recipe[k])}</p>" for k in prose if recipe.get(k)
    )
    cards = []
    if top:
        cards.append(f"<div class='card'><h3>run</h3>{_kv_table(top)}</div>")
    for name, table in recipe.items():
        if not isinstance(table, dict):
            continue
        rows = []
        for k, v in table.items():
            if isinstance(v, dict):
                rows += [(f"{k}.{k2}", _e(_fmt_value(v2))) for k2, v2 in v.items()]
            else:
                rows.append((k, _e(_fmt_value(v))))
        cards.append(f"<div class='card'><h3>[{_e(name)}]</h3>{_kv_table(rows)}</div>")
    raw = _e(text)
    return (
        "<p>The resolved recipe this run trained with (every default filled in).</p>"
        f"{about}<div class='cards'>{''.join(cards)}</div>"
        f"<details><summary>recipe.toml as saved</summary><pre>{raw}</pre></details>"
    )


def _curves_figure(events: list[dict[str, Any]]) -> Figure:
    """Validation accuracy, train and validation loss, learning rate and throughput."""
    k = plots.KINDS
    fig = plots.new_figure(10.0, 6.6)
    axes = fig.subplots(2, 2)
    one = [("run", events)]
    plots.draw_kind(axes[0, 0], one, k["test-acc-vs-iters"])
    ax = axes[0, 1]
    for kind, label, color in (
        (k["train-loss-vs-iters"], "train", plots.COLORS[0]),
        (k["test-loss-vs-iters"], "validation", plots.COLORS[1]),
    ):
        xs, ys = plots.series(events, kind)
        ax.plot(
            xs,
            ys,
            color=color,
            label=label,
            linewidth=1.6,
            marker="o" if kind.phase == "val" and len(xs) <= 40 else None,
            markersize=3.5,
        )
    plots.style_axes(ax, "iterations", "loss (cross-entropy)", "Loss")
    ax.legend(frameon=False)
    plots.draw_kind(axes[1, 0], one, k["lr-vs-iters"])
    ax = axes[1, 1]
    speed = plots.PlotKind("train", "samples_per_s", "iter", "samples / second", "Throughput")
    plots.draw_kind(ax, one, speed)
    return fig


def _confusion_figure(cm: np.ndarray) -> Figure:
    """Counts in every cell; blue diagonal (right), orange-red off-diagonal (mistakes)."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    n = cm.shape[0]
    rgba = np.ones((n, n, 4))
    off = cm.astype(float).copy()
    np.fill_diagonal(off, 0)
    err_norm = LogNorm(vmin=1, vmax=max(2.0, off.max()))
    right = Normalize(vmin=0, vmax=max(1.0, float(cm.sum(1).max())))
    reds, blues = colormaps["Oranges"], colormaps["Blues"]
    for t in range(n):
        for p in range(n):
            if t == p:
                rgba[t, p] = blues(0.35 + 0.65 * right(cm[t, p]))
            elif cm[t, p] > 0:
                rgba[t, p] = reds(0.15 + 0.85 * err_norm(cm[t, p]))
    fig = plots.new_figure(5.4, 5.0)
    ax = fig.add_subplot()
    ax.imshow(rgba, interpolation="nearest")
    for t in range(n):
        for p in range(n):
            v = int(cm[t, p])
            if v == 0:
                continue
            dark = (t == p) or err_norm(v) > 0.6
            ax.text(
                p,
                t,
                f"{v:,}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
                fontweight="bold" if t == p else None,
            )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_xticks(np.arange(-0.5, n), minor=True)
    ax.set_yticks(np.arange(-0.5, n), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def _confusion_html(r: TestResults) -> str:
    cm = np.asarray(r.metrics["confusion_matrix"])
    errors = int(cm.sum() - np.trace(cm))
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.unravel_index(int(off.argmax()), off.shape)
    worst = f"; the most frequent confusion is a true {t} read as {p} ({off[t, p]:,} times)"
    return (
        f"<p>{errors:,} of {int(cm.sum()):,} test digits are misclassified"
        f"{worst if errors else ''}. Rows: true digit; columns: predicted digit. "
        "Blue: correct; orange: mistakes (darker = more, log scale).</p>"
        + _img(_confusion_figure(cm), "confusion matrix")
    )


def _per_class_html(r: TestResults) -> str:
    rows = []
    scores = r.metrics["per_class"]
    worst = min(scores, key=lambda c: c["f1"])["class"]
    for c in scores:
        cls = " class='worst'" if c["class"] == worst else ""
        rows.append(
            f"<tr{cls}><td>{c['class']}</td><td>{c['precision']:.2%}</td>"
            f"<td>{c['recall']:.2%}</td><td><b>{c['f1']:.2%}</b></td>"
            f"<td>{c['support']:,}</td></tr>"
        )
    return (
        f"<p>Highlighted: the weakest digit by F1 ({worst}).</p>"
        "<table class='grid'><thead><tr><th>digit</th><th>precision</th><th>recall</th>"
        f"<th>F1</th><th>support</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _digit_tile(r: TestResults, i: int) -> str:
    ok = r.pred[i] == r.labels[i]
    return (
        f"<figure class='digit {'ok' if ok else 'bad'}'><img alt='test digit #{i}' "
        f"src='{_digit_uri(r.images[i])}'><figcaption>true <b>{r.labels[i]}</b> · "
        f"pred <b>{r.pred[i]}</b><br>{r.confidence[i]:.1%} <small>· #{i}</small>"
        "</figcaption></figure>"
    )


def _samples_html(r: TestResults, seed: int) -> str:
    picks = np.sort(np.random.default_rng(seed).choice(len(r.labels), 9, replace=False))
    tiles = "".join(_digit_tile(r, int(i)) for i in picks)
    return (
        f"<p>Nine drawn at random (seed {seed}) with the model's confidence; a red frame "
        f"marks a wrong prediction.</p><div class='digits three'>{tiles}</div>"
    )


def _mistakes_html(r: TestResults) -> str:
    wrong = np.flatnonzero(r.pred != r.labels)
    if wrong.size == 0:
        return _note("No mistakes on the test split.")
    top = wrong[np.argsort(-r.confidence[wrong], kind="stable")][:N_MISTAKES]
    tiles = "".join(_digit_tile(r, int(i)) for i in top)
    return (
        f"<p>The {len(top)} wrong answers the model was surest of, out of {wrong.size:,} "
        "mistakes; the percentage is its softmax probability for the predicted digit.</p>"
        f"<div class='digits'>{tiles}</div>"
    )


def _summary_html(layers: list, ops: dict[str, int]) -> str:
    from digitlab.summary import CONVENTION

    rows = "".join(
        f"<tr><td>{_e(r.name)}</td><td>{_e(r.type)}</td>"
        f"<td>{_e(' × '.join(map(str, r.output_shape)))}</td><td>{r.params:,}</td>"
        f"<td>{r.macs:,}</td><td>{r.flops:,}</td></tr>"
        for r in layers
    )
    total = (
        f"<tr class='total'><td>total</td><td></td><td></td><td>{ops['params']:,}</td>"
        f"<td>{ops['macs']:,}</td><td>{ops['flops']:,}</td></tr>"
    )
    return (
        f"<p>One 28×28 image, forward pass. {_e(CONVENTION)}.</p>"
        "<table class='grid summary'><thead><tr><th>layer</th><th>type</th><th>output shape</th>"
        "<th>params</th><th>MACs</th><th>FLOPs</th></tr></thead>"
        f"<tbody>{rows}{total}</tbody></table>"
    )


def _timings_html(
    meta: Any,
    events: list[dict[str, Any]],
    ops: dict[str, int],
    recipe: dict[str, Any],
) -> str:
    train = [e for e in events if e.get("phase") == "train"]
    last = events[-1]
    m = meta.metrics if meta else {}
    seconds = float(m.get("train_seconds", last.get("elapsed", 0.0)))
    iters = int(m.get("iterations", last.get("iter", 0)))
    batch = recipe.get("data", {}).get("batch_size")
    rows = [
        ("iterations", f"{iters:,}"),
        ("epochs", f"{float(m.get('epochs', last.get('epoch', 0))):.2f}"),
        ("batch size", _e(batch if batch is not None else "?")),
        ("training time", f"{seconds:.1f} s (validation included)"),
    ]
    speeds = [float(e["samples_per_s"]) for e in train if e.get("samples_per_s")]
    if speeds:
        med = float(np.median(speeds))
        # Training costs about 3 forward passes (forward + backward of inputs and weights).
        gflops = 3 * ops["flops"] * med / 1e9
        rows += [
            ("training speed", f"{med:,.0f} samples/s (median of {len(speeds)} log intervals)"),
            ("achieved compute", f"≈ {gflops:.2f} GFLOP/s (3 × forward FLOPs × samples/s)"),
        ]
    if batch and seconds > 0:
        rows.append(("overall", f"{iters * int(batch) / seconds:,.0f} samples/s, wall clock"))
    if m.get("selected_by"):
        rows.append(
            ("model kept", f"best {_e(m['selected_by'])} at iteration {m['selected_iter']:,}")
        )
    return _kv_table(rows)


def _data_html(meta: Any, recipe: dict[str, Any]) -> str:
    data = recipe.get("data", {})
    val = (
        f"last {data['val_fraction']:.0%} of the training split"
        if data.get("val_fraction")
        else data.get("val_split") or "none"
    )
    rows = [
        ("trained on", _e((meta and meta.trained_on) or data.get("train_split", "?"))),
        ("validated on", _e(val)),
        ("tested on", "test (10,000 digits)"),
    ]
    digests = meta.data_digests if meta else {}
    rows += [(name, f"<code>sha256 {_e(d)}</code>") for name, d in digests.items()]
    if not digests:
        rows.append(("digests", "written with the model when the run finishes"))
    return _kv_table(rows)


CSS = """
:root { --ink:#1d2330; --muted:#5d6675; --line:#e3e6ec; --accent:#0072B2; --bad:#c0392b; }
* { box-sizing: border-box; }
body { margin:0; background:#f4f6f9; color:var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width:1120px; margin:0 auto; padding:24px 20px 40px; }
header h1 { margin:0 0 2px; font-size:28px; }
.sub { color:var(--muted); margin:0 0 16px; word-break:break-all; }
nav { margin-top:14px; font-size:14px; }
nav a, a { color:var(--accent); text-decoration:none; }
.tiles { display:flex; flex-wrap:wrap; gap:12px; }
.tile { background:white; border:1px solid var(--line); border-radius:10px; padding:10px 16px;
  min-width:150px; }
.tile .v { font-size:22px; font-weight:650; }
.tile .k { color:var(--muted); font-size:13px; }
section { background:white; border:1px solid var(--line); border-radius:12px;
  padding:18px 22px; margin:18px 0; }
section h2 { margin:0 0 10px; font-size:20px; }
p { margin:0 0 12px; }
.note { color:var(--muted); font-style:italic; }
img.chart { display:block; width:100%; height:auto; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(250px, 1fr)); gap:12px;
  align-items:start; }
.about { color:var(--muted); max-width:80ch; }
.card { border:1px solid var(--line); border-radius:8px; padding:8px 12px; }
.card h3 { margin:0 0 4px; font:600 14px ui-monospace, Menlo, Consolas, monospace;
  color:var(--accent); }
table { border-collapse:collapse; font-variant-numeric:tabular-nums; }
table.kv th { text-align:left; font-weight:500; color:var(--muted); padding:2px 14px 2px 0;
  vertical-align:top; white-space:nowrap; }
table.kv td { padding:2px 0; }
.card table.kv { font:13px ui-monospace, Menlo, Consolas, monospace; }
table.grid { width:100%; }
table.grid th { text-align:right; border-bottom:2px solid var(--line); padding:6px 10px;
  font-weight:600; }
table.grid td { text-align:right; border-bottom:1px solid var(--line); padding:4px 10px; }
table.grid th:first-child, table.grid td:first-child { text-align:left; }
table.summary th:nth-child(2), table.summary td:nth-child(2) { text-align:left; }
table.grid tr.worst td { background:#fff3e6; }
table.grid tr.total td { font-weight:650; border-top:2px solid var(--line); }
code { font:12.5px ui-monospace, Menlo, Consolas, monospace; word-break:break-all; }
pre { background:#f7f8fa; padding:10px; border-radius:6px; font-size:13px; overflow:auto; }
details summary { cursor:pointer; color:var(--muted); margin-top:10px; }
.digits { display:grid; grid-template-columns:repeat(auto-fill, minmax(112px, 1fr)); gap:10px; }
.digits.three { grid-template-columns:repeat(3, 124px); }
.row { display:grid; gap:18px; margin:18px 0; align-items:start; }
.row > section { margin:0; }
.row.confusion { grid-template-columns:minmax(0, 540px) minmax(0, 1fr); }
.row.gallery { grid-template-columns:440px minmax(0, 1fr); }
.row.facts { grid-template-columns:minmax(0, 1fr) minmax(0, 1.5fr); }
@media (max-width: 900px) { .row.confusion, .row.gallery, .row.facts { display:block; }
  .row > section { margin:18px 0; } }
figure.digit { margin:0; text-align:center; border:2px solid var(--line); border-radius:8px;
  padding:8px 4px 6px; background:white; }
figure.digit.bad { border-color:var(--bad); }
figure.digit img { width:84px; height:84px; image-rendering:pixelated; }
figure.digit figcaption { font-size:13px; line-height:1.35; }
figure.digit.bad figcaption b:last-of-type { color:var(--bad); }
figure.digit small { color:var(--muted); }
footer { color:var(--muted); font-size:13px; text-align:center; }
"""
