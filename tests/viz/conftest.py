"""Runs to draw: one real short training run (shared by the viz tests) and hand-written logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = """
name = "tiny"
seed = 5
[model]
name = "softmax"
[data]
train_split = "train50k"
val_split = "val"
batch_size = 64
[solver]
optimizer = "sgd"
lr = {lr}
momentum = 0.9
[schedule]
policy = "inv"
gamma = 1e-4
power = 0.75
[train]
iters = 100
val_interval = 25
checkpoint_interval = 100
log_interval = 10
"""


def train_tiny(folder: Path, lr: float = 0.01) -> Path:
    """A real 100-iteration softmax run (a few seconds) into ``folder``."""
    from digitlab.recipes import load_recipe
    from digitlab.train.loop import train

    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "tiny.toml"
    recipe.write_text(TINY.format(lr=lr))
    train(load_recipe(str(recipe)), folder / "run", progress=False)
    return folder / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, digitlab_home: Path) -> Path:
    return train_tiny(tmp_path_factory.mktemp("tiny-a"))


def handwritten_events(iters: int = 60, val_every: int = 20) -> list[dict]:
    """Events as loop.py writes them, made up: loss falls, accuracy rises, lr steps down."""
    events = []
    for it in range(10, iters + 1, 10):
        lr = 0.1 if it <= iters // 2 else 0.01
        common = {"iter": it, "epoch": it / 100, "lr": lr, "elapsed": it * 0.05}
        events.append(
            {
                "phase": "train",
                **common,
                "loss": 2.3 / it**0.5,
                "accuracy": 1 - 1 / it,
                "samples_per_s": 5000.0 + it,
            }
        )
        if it % val_every == 0:
            events.append({"phase": "val", **common, "loss": 2.0 / it**0.5, "accuracy": 1 - 2 / it})
    return events


def write_log(folder: Path, events: list[dict], tail: str = "") -> Path:
    """A run folder holding only metrics.jsonl (``tail``: a half-written last line)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e) + "\n" for e in events) + tail
    (folder / "metrics.jsonl").write_text(text)
    return folder


@pytest.fixture
def logged_run(tmp_path: Path):
    """Factory: a run folder with a hand-written metrics.jsonl (see :func:`handwritten_events`)."""

    def make(
        name: str = "hand",
        events: list[dict] | None = None,
        tail: str = "",
        phases: tuple[str, ...] = ("train", "val"),
    ) -> Path:
        if events is None:
            events = [e for e in handwritten_events() if e["phase"] in phases]
        return write_log(tmp_path / name, events, tail)

    return make


@pytest.fixture(scope="session")
def tiny_trainer(digitlab_home: Path):
    """The :func:`train_tiny` function, for tests that need a run of their own."""
    return train_tiny
