"""The model artifact: one schema for model.json, validated whole, and weights that must be
the ones model.json describes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from digitlab.artifact import (
    BUNDLED_MODEL,
    META,
    WEIGHTS,
    Rejection,
    load_artifact,
    read_meta,
    update_meta,
)
from digitlab.errors import DigitlabError


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, folder)
    return folder


@pytest.fixture
def seven(tmp_path: Path, mnist) -> Path:
    images, labels = mnist["test"].images, mnist["test"].labels
    png = tmp_path / "seven.png"
    Image.fromarray(images[int((labels == 7).argmax())]).save(png)
    return png


def _edit_json(folder: Path, **fields) -> None:
    meta = json.loads((folder / META).read_text())
    meta.update(fields)
    (folder / META).write_text(json.dumps(meta))


def test_the_bundled_model_records_the_digest_of_its_weights():
    import hashlib

    meta = read_meta(BUNDLED_MODEL)
    assert meta.weights_sha256 == hashlib.sha256((BUNDLED_MODEL / WEIGHTS).read_bytes()).hexdigest()


def test_a_bit_flipped_weights_file_is_refused_not_served(model_copy, seven, cli):
    blob = bytearray((model_copy / WEIGHTS).read_bytes())
    blob[-100] ^= 0x10  # one bit of one weight: the file still parses as safetensors
    (model_copy / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(DigitlabError, match="does not match model.json"):
        load_artifact(model_copy)
    out = cli("predict", "--model", str(model_copy), str(seven))
    err = out.stderr.decode().strip()
    assert out.returncode == 2 and "does not match model.json" in err
    assert len(err.splitlines()) == 1 and not out.stdout


def test_new_weights_beside_old_metadata_are_refused(model_copy, tmp_path):
    """A kill between replacing model.safetensors and model.json leaves such a pair."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_copy / WEIGHTS))
    first = next(iter(state))
    state[first] = state[first] * 0.5  # "retrained" weights of the same shapes
    save_file(state, str(model_copy / WEIGHTS))
    with pytest.raises(DigitlabError, match="different saves"):
        load_artifact(model_copy)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "digitlab-model", "a": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON"),
        (None, "rejection.threshold: Input should be a valid number"),
        ("NaN", "not valid JSON"),
    ],
)
def test_model_json_faults_are_one_line(model_copy, text, message):
    if text is None:
        _edit_json(model_copy, rejection={"threshold": "0.5"})
    elif text == "NaN":
        raw = (model_copy / META).read_text()
        (model_copy / META).write_text(raw.replace('"temperature": 0.624157', '"temperature": NaN'))
        message = "temperature"
    else:
        (model_copy / META).write_text(text)
    with pytest.raises(DigitlabError, match=message) as err:
        read_meta(model_copy)
    assert "\n" not in str(err.value)


def test_update_meta_validates_and_keeps_the_rest(model_copy):
    before = read_meta(model_copy)
    after = update_meta(model_copy, rejection=Rejection(temperature=2.0, threshold=0.3))
    assert after.rejection.temperature == 2.0 and after.weights_sha256 == before.weights_sha256
    assert read_meta(model_copy).line == before.line
    with pytest.raises(DigitlabError, match="rejection.temperature"):
        update_meta(model_copy, rejection={"temperature": -1.0})
    assert read_meta(model_copy).rejection.temperature == 2.0  # nothing written on refusal
    load_artifact(model_copy)  # still loads: the weights were not touched
