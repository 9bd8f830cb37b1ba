"""`digitlab bench`: every key on a tiny model, ONNX backends that reproduce torch, int8
accuracy measured on the real MNIST test digits, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitlab import runtimes
from digitlab.artifact import BUNDLED_MODEL
from digitlab.bench import bench, load_bench_model, mnist_test_accuracy
from digitlab.errors import DigitlabError
from digitlab.export import onnx_bytes, with_normalization
from digitlab.quantize import QuantConfig, quantize_onnx

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers

FAST = ["torch-eager", "ort-fp32", "ort-int8"]


def test_bench_json_on_a_tiny_model_has_every_key(cli):
    args = ["bench", "softmax", "--batch", "8", "--threads", "1", "--repeats", "1", "--json"]
    done = cli(*args, *[a for b in FAST for a in ("--backend", b)])
    assert done.returncode == 0, done.stderr.decode()
    r = json.loads(done.stdout)
    assert r["model"] == "softmax" and r["batch"] == 8 and r["trained"] is False
    assert r["params"] == 7850 and r["flops_per_image"] > 0
    assert set(r["training"]) == {
        "forward_ms",
        "backward_ms",
        "forward_backward_ms",
        "images_per_s",
    }
    assert all(v > 0 for v in r["training"].values())
    linear = next(layer for layer in r["layers"] if layer["type"] == "Linear")
    assert linear["params"] == 7850 and linear["forward_ms"] > 0 and linear["backward_ms"] > 0
    assert r["activation_bytes"]["saved_for_backward"] > 0
    assert r["activation_bytes"]["layer_outputs"] >= 8 * 784 * 4
    assert set(r["peak_gflops"]) == {"onnxruntime", "onnxruntime 1x1", "torch"}
    assert [b["name"] for b in r["backends"]] == FAST
    for b in r["backends"]:
        assert b["status"] == "ok"
        assert b["images_per_s"] > 0 and b["latency_ms_p50"] > 0 and b["gflops"] > 0
        assert b["accuracy"] is None and b["accuracy_note"] == "n/a (untrained)"
    assert r["backends"][0]["vs_torch_eager"] == 1.0


def test_bench_table_names_every_backend(cli):
    done = cli("bench", "softmax", "--batch", "4", "--threads", "1", "--repeats", "1",
               "--backend", "torch-eager", "--backend", "ort-fp32")  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    for text in ("forward+backward", "per layer", "torch-eager", "ort-fp32", "n/a (untrained)"):
        assert text in out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_onnx_matches_torch_within_1e_4(backend, mnist):
    if backend == "openvino":
        pytest.importorskip("openvino")
    bm = load_bench_model("lenet-caffe")
    model = with_normalization(bm.module, bm.normalization)
    run = getattr(runtimes, backend)(onnx_bytes(model), threads=2).run
    images = np.ascontiguousarray(mnist["test"].images[:300])
    expected = runtimes.torch_eager(model).run(images)
    assert np.abs(run(images) - expected).max() <= 1e-4


@pytest.fixture(scope="module")
def bundled_int8(mnist):
    """The bundled (trained) model's fp32 graph and its default int8 graph."""
    bm = load_bench_model(str(BUNDLED_MODEL))
    fp32 = onnx_bytes(with_normalization(bm.module, bm.normalization))
    return fp32, quantize_onnx(fp32)


def test_int8_accuracy_is_measured_on_the_mnist_test_digits(bundled_int8, mnist):
    fp32, int8 = bundled_int8
    test = mnist["test"]
    f = runtimes.onnxruntime(fp32, threads=1).run(test.images)
    i = runtimes.onnxruntime(int8, threads=1, precision="int8").run(test.images)
    assert np.abs(f - i).max() > 1e-3  # a different model really ran
    acc_f = float((f.argmax(1) == test.labels).mean())
    acc_i = float((i.argmax(1) == test.labels).mean())
    assert acc_f > 0.98 and acc_f - acc_i <= 0.005
    run = runtimes.onnxruntime(int8, threads=1, precision="int8").run
    assert mnist_test_accuracy(run, 500) == pytest.approx(acc_i, abs=1e-12)


def test_bench_of_a_trained_model_reports_measured_accuracy(bundled_int8):
    r = bench(str(BUNDLED_MODEL), 500, threads=1, backends=["ort-fp32", "ort-int8"],
              repeats=1, training_iters=0, peak=False, round_s=0.01)  # fmt: skip
    fp32, int8 = r.backends
    assert r.trained and 0.98 < fp32.accuracy <= 1 and 0.975 < int8.accuracy <= 1
    run = runtimes.onnxruntime(bundled_int8[1], threads=1, precision="int8").run
    assert int8.accuracy == pytest.approx(mnist_test_accuracy(run, 500), abs=1e-12)


def test_a_failing_torch_compile_is_reported_not_raised(monkeypatch):
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nlong traceback")

    monkeypatch.setattr(torch, "compile", broken)
    r = bench("softmax", 4, threads=1, backends=["torch-eager", "torch-compile"], repeats=1,
              training_iters=0, peak=False, round_s=0.01)  # fmt: skip
    compiled = r.backends[1]
    assert compiled.status == "unavailable: RuntimeError: no C++ compiler"
    assert compiled.images_per_s is None and r.backends[0].images_per_s > 0


def test_int8_variant_names_round_trip_and_bad_ones_say_what_is_allowed():
    for name in ("qop-pc-s8", "qdq-pt-u8", "qop-pt-s8-rr", "qdq-pc-s8-fc"):
        assert QuantConfig.parse(name).name == name
    with pytest.raises(DigitlabError, match="qop|qdq"):
        QuantConfig.parse("qdq-int4")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-model"], "unknown model 'no-such-model'; known models:"),
        (["softmax", "--batch", "0"], "--batch"),
        (["softmax", "--batch", "100000000"], "1<=x<=65536"),
        (["softmax", "--backend", "tensorrt"], "unknown backend 'tensorrt'"),
        (["softmax", "--backend", "ort-fp32:qdq"], "only the int8 backends take a :VARIANT"),
        (["./no/such/run"], "no such model or run folder"),
        (["softmax", "--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_bench_user_errors_are_one_line_and_exit_2(cli, args, message):
    done = cli("bench", *args)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and message in err
