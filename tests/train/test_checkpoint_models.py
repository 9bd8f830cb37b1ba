"""Checkpoints are models: evaluate, predict and export read them with the logits their
weights give when loaded by hand; --checkpoints scores them on val as the run did; a run
continues exactly from a named one; bad ones are one error line, exit 2. Real tiny runs on
real MNIST, real CLI processes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab import api
from digitlab.errors import DigitlabError
from digitlab.recipes import load_recipe
from digitlab.train.checkpoint_models import model_folder, rewind, score_checkpoints
from digitlab.train.loop import train
from digitlab.train.runlog import read_metrics
from testkit import write_recipe as small_recipe


def write_recipe(folder: Path, model: str = "softmax", iters: int = 60, val: str = "val") -> Path:
    path = folder / f"{model}-{iters}-{val}.toml"
    small_recipe(
        path,
        name="ckpt-models",
        seed=5,
        model={"name": model},
        data={"val_split": val},
        train={"iters": iters},
    )
    return path


def ckpt(run: Path, iteration: int) -> Path:
    return run / "checkpoints" / f"iter_{iteration:07d}.safetensors"


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def comparable(events: list[dict]) -> list[tuple]:
    return [(e["phase"], e["iter"], round(e["loss"], 6), round(e["accuracy"], 6)) for e in events]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()
            and p.name != ".lock"}  # fmt: skip


def by_hand(checkpoint: Path, images: np.ndarray, model: str = "softmax") -> np.ndarray:
    """Logits of the checkpoint's ``model.`` tensors in a fresh registry model, fed as the
    registry says: what a user loading the weights without digitlab's readers gets."""
    from safetensors.torch import load_file

    from digitlab.models import create_model, get_entry

    tensors = load_file(str(checkpoint))
    net = create_model(model)
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    with torch.no_grad():
        x = get_entry(model).normalization.apply(torch.from_numpy(images))
        return net.eval()(x).numpy()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digitlab_home) -> SimpleNamespace:
    """A softmax run of 60 iterations (checkpoints at 20, 40, 60) and an mlp run of 20."""
    folder = tmp_path_factory.mktemp("runs")
    softmax, mlp = folder / "softmax", folder / "mlp"
    train(load_recipe(str(write_recipe(folder))), softmax, progress=False)
    train(load_recipe(str(write_recipe(folder, "mlp", iters=20))), mlp, progress=False)
    return SimpleNamespace(softmax=softmax, mlp=mlp, recipes=folder)


# ---------------------------------------------------------------------------- as models


def test_evaluate_scores_a_checkpoint_as_its_weights_loaded_by_hand(runs, cli, mnist):
    run = runs.softmax
    test = mnist["test"]
    logits = torch.from_numpy(by_hand(ckpt(run, 20), test.images))
    labels = torch.from_numpy(test.labels)
    loss = float(torch.nn.functional.cross_entropy(logits, labels))
    accuracy = float((logits.argmax(1) == labels).float().mean())

    r = cli("evaluate", f"{run}@20", "--json")
    assert r.returncode == 0, r.stderr.decode()
    a = json.loads(r.stdout)
    assert a["model"] == f"{run}@20" and a["n"] == 10_000
    assert a["accuracy"] == pytest.approx(accuracy, abs=1e-7)
    assert a["loss"] == pytest.approx(loss, rel=1e-5)
    b = api.evaluate(ckpt(run, 20))  # the file itself, through the Python API
    assert b.model == str(ckpt(run, 20))
    assert (b.accuracy, b.loss) == (a["accuracy"], a["loss"])
    assert [list(row) for row in b.confusion] == a["confusion_matrix"]
    final = api.evaluate(run)
    assert final.accuracy > a["accuracy"] + 0.02  # iteration 20 is not the finished model


def test_predict_on_a_checkpoint_gives_the_probabilities_of_its_weights(runs, cli, mnist, tmp_path):
    images = mnist["test"].images[:12]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
    z = by_hand(ckpt(runs.softmax, 40), images)
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)

    r = cli("predict", f"{runs.softmax}@40", str(tmp_path), "--no-preprocess", "--json")
    assert r.returncode == 0, r.stderr.decode()
    got = np.array([json.loads(line)["probabilities"] for line in r.stdout.splitlines()])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_export_of_a_checkpoint_writes_onnx_with_its_weights_logits(runs, cli, mnist, tmp_path):
    import onnxruntime as ort

    before = files(runs.mlp)
    refused = cli("export", f"{runs.mlp}@20")
    assert "give --out" in one_error_line(refused)

    out = tmp_path / "mlp-20.onnx"
    r = cli("export", str(ckpt(runs.mlp, 20)), "--out", str(out))
    assert r.returncode == 0, r.stderr.decode()
    assert f"wrote {out}" in r.stdout.decode()
    images = mnist["test"].images[:500]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": images})[0]
    np.testing.assert_allclose(got, by_hand(ckpt(runs.mlp, 20), images, "mlp"), atol=1e-4)
    assert files(runs.mlp) == before  # nothing written into the run


# ---------------------------------------------------------------------------- choosing one


@pytest.mark.slow
def test_checkpoints_are_scored_on_val_as_the_run_validated_them(runs, cli):
    r = cli("evaluate", str(runs.softmax), "--checkpoints", "--json")
    assert r.returncode == 0, r.stderr.decode()
    scores = json.loads(r.stdout)
    val = {e["iter"]: e for e in read_metrics(runs.softmax) if e["phase"] == "val"}
    assert scores["split"] == "val" and scores["n"] == 10_000
    assert [c["iteration"] for c in scores["checkpoints"]] == [20, 40, 60]
    for c in scores["checkpoints"]:
        assert c["val_accuracy"] == pytest.approx(val[c["iteration"]]["accuracy"], abs=1e-7)
        assert c["val_loss"] == pytest.approx(val[c["iteration"]]["loss"], rel=1e-5)
    best = max(val.values(), key=lambda e: e["accuracy"])["iter"]
    assert scores["best"]["iteration"] == best
    assert scores["best"]["ref"] == f"{runs.softmax}@{best}"

    table = cli("evaluate", str(runs.softmax), "--checkpoints").stdout.decode().splitlines()
    assert table[1].split() == ["iteration", "val", "accuracy", "val", "loss"]
    assert [ln.split()[0] for ln in table[2:5]] == ["20", "40", "60"]
    assert table[2 + [20, 40, 60].index(best)].endswith("<- best")
    assert table[-1] == f"best by val accuracy: iteration {best} ({runs.softmax}@{best})"


def test_the_best_checkpoint_is_chosen_by_val_not_by_recency(runs, tmp_path):
    run = copy_run(runs.softmax, tmp_path / "run")
    shutil.copyfile(ckpt(run, 20), ckpt(run, 60))  # the newest now holds the worst weights
    ckpt(run, 40).write_bytes(ckpt(run, 40).read_bytes()[:1000])  # and one is damaged
    scores = score_checkpoints(run)
    rows = {c["iteration"]: c for c in scores["checkpoints"]}
    assert rows[60]["val_accuracy"] == rows[20]["val_accuracy"]
    assert "unreadable checkpoint" in rows[40]["error"]
    assert scores["best"]["iteration"] == 20  # the earlier of two equal ones


def test_checkpoints_are_never_compared_on_test(runs, cli, tmp_path):
    run = copy_run(runs.softmax, tmp_path / "run")
    (run / "recipe.toml").write_text(
        (run / "recipe.toml").read_text().replace('val_split = "val"', 'val_split = "test"')
    )
    line = one_error_line(cli("evaluate", str(run), "--checkpoints"))
    assert "would select on test" in line, line
    asked = one_error_line(cli("evaluate", str(runs.softmax), "--checkpoints", "--split", "test"))
    assert "validation data only" in asked, asked


# ---------------------------------------------------------------------------- going back


@pytest.mark.slow
def test_resume_from_an_earlier_checkpoint_repeats_the_uninterrupted_run(runs, cli, tmp_path):
    run = copy_run(runs.softmax, tmp_path / "run")
    r = cli("train", "--resume", "--out", str(run), "--from-checkpoint", "20", "--no-progress")
    assert r.returncode == 0, r.stderr.decode()
    assert "resumed from iter_0000020.safetensors at iteration 20 of 60" in r.stderr.decode()
    assert comparable(read_metrics(run)) == comparable(read_metrics(runs.softmax))
    for name in ("model.safetensors", "checkpoints/iter_0000040.safetensors"):
        assert _same_tensors(run / name, runs.softmax / name), name  # weights, optimizer, RNG


def _same_tensors(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.slow
def test_resuming_from_a_checkpoint_removes_the_later_ones(runs, cli, tmp_path):
    run = copy_run(runs.softmax, tmp_path / "run")
    r = cli("train", "--resume", "--out", str(run), "--from-checkpoint", f"{run}@20",
            "--iters", "40", "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "iter_0000020.safetensors",
        "iter_0000040.safetensors",
    ]
    events = comparable(read_metrics(run))
    assert max(e[1] for e in events) == 40
    original = comparable(read_metrics(runs.softmax))
    assert [e for e in events if e[0] != "test"] == [e for e in original if e[1] <= 40]
    # a plain resume now continues this history, not the abandoned one at iteration 60
    again = cli("train", "--resume", "--out", str(run), "--iters", "40")
    assert "is finished (40 iterations" in one_error_line(again)


def test_from_checkpoint_refuses_a_bad_checkpoint_and_removes_nothing(runs, cli, tmp_path):
    run = copy_run(runs.softmax, tmp_path / "run")
    shutil.copyfile(ckpt(runs.mlp, 20), ckpt(run, 80))  # another run's architecture
    ckpt(run, 50).write_bytes(b"")  # a full disk
    recipe = load_recipe(str(run / "recipe.toml"))
    before = files(run)
    cases = {
        "30": "has no checkpoint at iteration 30",
        "80": "its weights do not fit model softmax",
        "50": "empty file (0 bytes), not a checkpoint",
        str(ckpt(runs.mlp, 20)): "not one of",
        str(run / "model.json"): "not a checkpoint",
    }
    for which, message in cases.items():
        with pytest.raises(DigitlabError, match=re.escape(message)):
            rewind(run, which, recipe)
        assert files(run) == before, which
    line = one_error_line(cli("train", "--resume", "--out", str(run), "--from-checkpoint", "80"))
    assert "another run's checkpoint?" in line, line
    assert files(run) == before
    usage = one_error_line(cli("train", "--out", str(run), "--from-checkpoint", "20"))
    assert "give --resume" in usage, usage


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def bad(runs, tmp_path) -> dict[str, tuple[str, str]]:
    """Each bad checkpoint reference and the words its error must say."""
    run = copy_run(runs.softmax, tmp_path / "run")
    shutil.copyfile(ckpt(runs.mlp, 20), ckpt(run, 80))
    ckpt(run, 50).write_bytes(b"")
    full = ckpt(run, 40).read_bytes()
    ckpt(run, 40).write_bytes(full[: len(full) // 2])
    bare = copy_run(runs.softmax, tmp_path / "bare")
    (bare / "recipe.toml").unlink()
    return {
        "missing file": (str(ckpt(run, 70)), "no such checkpoint; it has checkpoints at"),
        "missing short form": (f"{run}@70", "has no checkpoint at iteration 70"),
        "another architecture": (f"{run}@80", "its weights do not fit model softmax"),
        "empty": (str(ckpt(run, 50)), "empty file (0 bytes), not a checkpoint"),
        "truncated": (f"{run}@40", "unreadable checkpoint"),
        "no recipe.toml": (f"{bare}@20", "no recipe.toml"),
    }


def test_every_bad_checkpoint_is_refused_by_the_one_path_all_commands_take(bad):
    for ref, message in bad.values():
        with pytest.raises(DigitlabError, match=re.escape(message)), model_folder(ref):
            pass


@pytest.mark.parametrize(
    ("case", "command"),
    [
        ("missing file", "evaluate"),
        ("missing short form", "predict"),
        ("another architecture", "export"),
        ("empty", "predict"),
        ("truncated", "evaluate"),
        ("no recipe.toml", "export"),
    ],
)
def test_a_bad_checkpoint_is_one_error_line_with_exit_2(bad, cli, case, command, tmp_path):
    ref, message = bad[case]
    args = {
        "evaluate": ["evaluate", ref],
        "predict": ["predict", "--model", ref, str(tmp_path)],
        "export": ["export", ref, "--out", str(tmp_path / "x.onnx")],
    }[command]
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "blank.png")
    line = one_error_line(cli(*args))
    assert message in line, line
    assert not (tmp_path / "x.onnx").exists()
