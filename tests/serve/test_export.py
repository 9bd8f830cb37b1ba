"""ONNX export: the graph reproduces torch on real MNIST, carries its own normalisation, and a
stale or missing model.onnx is refused with a message that says how to make a new one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from digitlab.errors import DigitlabError
from digitlab.export import export_checked
from digitlab.predict import Predictor
from digitlab.runtime import ONNX_FILE, OnnxBackend, TorchBackend


@pytest.fixture(scope="module")
def model_copy(served_model, tmp_path_factory):
    """A private copy of the served model, free to be re-exported or tampered with."""
    folder = tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(served_model, folder, ignore=shutil.ignore_patterns("checkpoints"))
    return folder


@pytest.mark.slow  # 2-4 s: keeps `make test-fast` under 2 minutes
def test_export_matches_torch_on_mnist_test_digits(model_copy, mnist):
    result = export_checked(model_copy, model_copy / "fresh.onnx")
    assert result.path.is_file()
    assert result.checked == 1000
    assert result.max_abs_diff <= 1e-4
    images = mnist["test"].images[-500:]  # digits the export check did not see
    onnx = OnnxBackend(model_copy, path=result.path)
    torch_logits = TorchBackend(model_copy).logits(images)
    assert np.abs(onnx.logits(images) - torch_logits).max() <= 1e-4


def test_onnx_graph_takes_raw_uint8_pixels_with_any_batch_size(served_model, mnist):
    backend = OnnxBackend(served_model)
    (pixels,) = backend.session.get_inputs()
    assert pixels.type == "tensor(uint8)"
    assert pixels.shape[1:] == [28, 28] and not isinstance(pixels.shape[0], int)
    images = mnist["test"].images[:7]
    batch = backend.logits(images)
    one_by_one = np.concatenate([backend.logits(images[i : i + 1]) for i in range(7)])
    assert batch.shape[0] == 7 and batch.dtype == np.float32
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)


def test_onnx_and_torch_predictors_give_the_same_answers(served_model, mnist, web):
    onnx, torch = Predictor(served_model, "onnx"), Predictor(served_model, "torch")
    for digit in mnist["test"].images[:10]:
        image = web.png(web.paper_digit(digit))
        a, b = onnx.predict_image(image), torch.predict_image(image)
        assert a["digit"] == b["digit"]
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-5)


def test_an_onnx_file_from_other_weights_is_refused(model_copy, web):
    from safetensors.numpy import load_file, save_file

    stale = model_copy.parent / "stale"
    shutil.copytree(model_copy, stale)
    weights = load_file(str(stale / "model.safetensors"))
    save_file(
        {k: v * 1.01 if v.dtype.kind == "f" else v for k, v in weights.items()},
        str(stale / "model.safetensors"),
    )
    with pytest.raises(DigitlabError, match="re-export"):
        OnnxBackend(stale)


def test_a_missing_onnx_file_says_how_to_export(model_copy):
    bare = model_copy.parent / "bare"
    shutil.copytree(model_copy, bare, ignore=shutil.ignore_patterns("*.onnx"))
    with pytest.raises(DigitlabError, match="digitlab export .* --format onnx"):
        OnnxBackend(bare)


def test_export_command_writes_model_onnx_beside_the_model(model_copy, cli):
    (model_copy / ONNX_FILE).unlink(missing_ok=True)
    done = cli("export", str(model_copy), "--format", "onnx")
    assert done.returncode == 0, done.stderr
    assert (model_copy / ONNX_FILE).is_file()
    assert b"max |logit difference| from torch on 1,000 MNIST test digits" in done.stdout


def test_export_of_a_folder_without_a_model_fails_in_one_line(tmp_path, cli):
    done = cli("export", str(tmp_path), "--format", "onnx")
    assert done.returncode == 2
    assert done.stderr.decode().count("\n") == 1
    assert "model.json" in done.stderr.decode()


def test_export_to_a_place_that_cannot_be_written_fails_in_one_line(model_copy, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = cli("export", str(model_copy), "--out", str(blocker / "sub" / "m.onnx"))
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith("digitlab: error: ") and "Traceback" not in err
    assert not (blocker.parent / "sub").exists()


def test_auto_backend_is_onnx_where_it_matches_the_weights_and_torch_otherwise(model_copy):
    import torch

    from digitlab.artifact import load_artifact, save_artifact
    from digitlab.runtime import load_backend

    fresh = model_copy.parent / "auto-fresh"
    shutil.copytree(model_copy, fresh)
    export_checked(fresh)
    assert isinstance(load_backend(fresh), OnnxBackend)  # "auto" is the default
    bare = model_copy.parent / "auto-bare"
    shutil.copytree(fresh, bare, ignore=shutil.ignore_patterns("*.onnx"))
    assert isinstance(load_backend(bare), TorchBackend)
    retrained = model_copy.parent / "auto-retrained"  # new weights, the old model.onnx
    shutil.copytree(fresh, retrained)
    model, meta = load_artifact(retrained)
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)
    save_artifact(retrained, model, meta)
    assert isinstance(load_backend(retrained), TorchBackend)
    with pytest.raises(DigitlabError, match="re-export"):
        load_backend(retrained, "onnx")
    (fresh / ONNX_FILE).write_bytes(b"not onnx")  # a damaged file is an error, not ignored
    with pytest.raises(DigitlabError, match="not a loadable"):
        load_backend(fresh)
