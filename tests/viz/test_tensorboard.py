"""`train --tensorboard`: every metrics.jsonl event is mirrored as TensorBoard scalars."""

from __future__ import annotations

import pytest

from digitlab.train.runlog import read_metrics

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers

pytest.importorskip("tensorboard")


def test_tensorboard_scalars_mirror_the_metrics_events(tmp_path, cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        'name = "tb"\n[model]\nname = "softmax"\n[data]\ntrain_split = "train50k"\n'
        'val_split = "val"\nbatch_size = 64\n[solver]\noptimizer = "sgd"\nlr = 0.01\n'
        "[train]\niters = 40\nval_interval = 20\ncheckpoint_interval = 40\nlog_interval = 10\n"
    )
    done = cli("train", str(recipe), "--out", str(tmp_path / "run"), "--tensorboard")
    assert done.returncode == 0, done.stderr.decode()
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    events = read_metrics(tmp_path / "run")
    for phase, key in (("train", "loss"), ("train", "lr"), ("val", "accuracy"), ("test", "loss")):
        logged = [(e["iter"], e[key]) for e in events if e["phase"] == phase]
        scalars = [(s.step, s.value) for s in acc.Scalars(f"{phase}/{key}")]
        assert [s for s, _ in scalars] == [i for i, _ in logged]
        assert [v for _, v in scalars] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_a_run_without_the_flag_writes_no_tensorboard_folder(tiny_run):
    assert not (tiny_run / "tensorboard").exists()
