"""`digitlab plot`: Caffe's eight curve kinds from real and hand-written runs, overlays, SVG,
live runs, and one-line errors for bad input."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.train.runlog import read_metrics
from digitlab.viz.plots import KINDS, draw_kind, new_figure, plot_runs, run_events

CAFFE_KINDS = {
    "test-acc-vs-iters",
    "test-acc-vs-seconds",
    "test-loss-vs-iters",
    "test-loss-vs-seconds",
    "lr-vs-iters",
    "lr-vs-seconds",
    "train-loss-vs-iters",
    "train-loss-vs-seconds",
}


def assert_png(path, min_bytes: int = 8000) -> None:
    assert path.is_file()
    assert path.stat().st_size > min_bytes  # axes, labels and a curve, not a blank canvas
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 400
        # Not a single colour: something was drawn.
        assert len(im.convert("RGB").getcolors(1 << 20)) > 10


def test_the_kinds_are_caffes_eight():
    assert set(KINDS) == CAFFE_KINDS


@pytest.mark.parametrize("kind", sorted(CAFFE_KINDS))
def test_every_kind_renders_from_a_real_run(tiny_run, tmp_path, kind):
    out = plot_runs([tiny_run], kind, tmp_path / f"{kind}.png")
    assert_png(out)


@pytest.mark.parametrize("kind", sorted(CAFFE_KINDS))
def test_every_kind_renders_from_a_handwritten_log(logged_run, tmp_path, kind):
    out = plot_runs([logged_run()], kind, tmp_path / f"{kind}.png")
    assert_png(out)


def test_test_kinds_plot_the_validation_events_in_percent(logged_run):
    events = run_events(logged_run())
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    draw_kind(ax, [("hand", events)], KINDS["test-acc-vs-iters"])
    xs, ys = ax.lines[0].get_data()
    val = [e for e in events if e["phase"] == "val"]
    assert list(xs) == [e["iter"] for e in val]
    assert list(ys) == pytest.approx([100 * e["accuracy"] for e in val])
    assert ax.get_ylabel() == "validation accuracy (%)" and ax.get_xlabel() == "iterations"


def test_seconds_kinds_use_elapsed_training_time(logged_run):
    events = run_events(logged_run())
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    draw_kind(ax, [("hand", events)], KINDS["train-loss-vs-seconds"])
    xs, _ = ax.lines[0].get_data()
    assert list(xs) == [e["elapsed"] for e in events if e["phase"] == "train"]
    assert "seconds" in ax.get_xlabel()


def test_two_runs_overlay_with_their_folder_names_in_the_legend(
    tiny_run, logged_run, tmp_path, cli
):
    hand = logged_run("other-run")
    r = cli(
        "plot",
        str(tiny_run),
        str(hand),
        "--kind",
        "train-loss-vs-iters",
        "--out",
        str(tmp_path / "both.png"),
    )
    assert r.returncode == 0, r.stderr.decode()
    assert_png(tmp_path / "both.png")
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    n = draw_kind(
        ax,
        [("run", run_events(tiny_run)), ("other-run", run_events(hand))],
        KINDS["train-loss-vs-iters"],
    )
    assert n == 2 and [line.get_label() for line in ax.lines] == ["run", "other-run"]
    assert ax.lines[0].get_color() != ax.lines[1].get_color()


def test_svg_output_is_a_vector_file(tiny_run, tmp_path):
    out = plot_runs([tiny_run], "test-loss-vs-iters", tmp_path / "loss.svg")
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    assert b"validation loss" in out.read_bytes()


def test_default_output_is_the_kind_name_in_the_current_folder(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plot_runs([tiny_run], "lr-vs-iters").name == "lr-vs-iters.png"
    assert_png(tmp_path / "lr-vs-iters.png")


def test_a_run_still_in_progress_plots_what_it_has(logged_run, tmp_path):
    live = logged_run("live", tail='{"phase": "train", "iter": 70, "lo')  # half-written line
    out = plot_runs([live], "train-loss-vs-iters", tmp_path / "live.png")
    assert_png(out)


def test_lines_that_are_not_events_are_skipped(logged_run, tmp_path):
    """Hand-edited or foreign lines must not crash a plot: only well-formed events count."""
    good = logged_run("good")
    junk = '[1, 2]\n{"phase": "val", "iter": "x", "accuracy": "y"}\n{"phase": "val", "iter": true}'
    mixed = logged_run("mixed", tail=junk)
    assert read_metrics(mixed) == read_metrics(good)
    assert_png(plot_runs([mixed], "test-acc-vs-iters", tmp_path / "acc.png"))


def test_a_run_without_validation_events_says_so(logged_run, tmp_path):
    early = logged_run("early", phases=("train",))
    with pytest.raises(DigitlabError, match="no validation events"):
        plot_runs([early], "test-acc-vs-iters", tmp_path / "acc.png")
    assert not (tmp_path / "acc.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere", "--kind", "lr-vs-iters"], "no such run folder"),
        (["{empty}", "--kind", "lr-vs-iters"], "holds no events"),
        (["{hand}", "--kind", "accuracy-vs-time"], "unknown plot kind"),
        (["{hand}", "--kind", "lr-vs-iters", "--out", "{tmp}/lr.jpg"], ".png or .svg"),
        (["{tmp}", "--kind", "lr-vs-iters"], "no metrics.jsonl"),
        (["{binary}", "--kind", "lr-vs-iters"], "not a metrics file (not UTF-8 text)"),
    ],
)
def test_bad_input_exits_2_with_one_stderr_line(cli, logged_run, tmp_path, args, message):
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "metrics.jsonl").write_bytes(bytes(range(128, 256)) * 4)
    paths = {"empty": logged_run("empty", []), "hand": logged_run(), "tmp": tmp_path}
    paths["binary"] = binary
    r = cli("plot", *[a.format(**paths) for a in args])
    err = r.stderr.decode()
    assert r.returncode == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
