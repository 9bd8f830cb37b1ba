"""ONNX export: the writer (the runtime that loads the files is digitlab.runtime).

The exported graph takes raw uint8 pixels (N,28,28) and returns logits (N,C): the model's
normalisation is baked in, so a runtime needs nothing from model.json to feed it. Every export
is checked against PyTorch on real MNIST test digits before it is written. The graph carries
the SHA-256 of the weights it came from, so a stale model.onnx (weights retrained since) is
refused instead of silently serving the old model.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.runtime import ONNX_FILE, WEIGHTS_KEY, ort_session, weights_sha256

TOLERANCE = 1e-4  # max |logit difference| allowed between torch and ONNX Runtime
OPSET = 17


@dataclass
class ExportResult:
    """Where the ONNX file went and how closely it matches torch."""

    path: Path
    max_abs_diff: float
    checked: int
    seconds: float


def export_onnx(model_folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Export a model to ONNX (default: model.onnx beside model.json), checked against torch."""
    return export_checked(model_folder, out).path


def export_checked(
    model_folder: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    check_count: int = 1000,
    tolerance: float = TOLERANCE,
) -> ExportResult:
    """Export, then compare ONNX Runtime's logits with torch's on ``check_count`` MNIST test
    digits; a DigitlabError (and no file) when they differ by more than ``tolerance``."""
    from digitlab.artifact import resolve_artifact
    from digitlab.data.dataset import load_split
    from digitlab.fileio import write_bytes_atomic

    start = time.perf_counter()
    folder = resolve_artifact(model_folder)
    out_path = Path(out) if out else folder / ONNX_FILE
    model = _normalised_torch_model(folder)
    data = _to_onnx_bytes(model, weights_sha256(folder))
    images = load_split("test").images[:check_count]
    diff = _max_abs_diff(model, data, images)
    if not diff <= tolerance:
        raise DigitlabError(
            f"ONNX export of {folder} differs from torch by {diff:.3g} in the logits "
            f"(allowed {tolerance:g}); the model uses an operator ONNX does not reproduce"
        )
    write_bytes_atomic(out_path, data)
    return ExportResult(out_path, diff, len(images), time.perf_counter() - start)


def _normalised_torch_model(folder: Path):
    """The artifact's model with its normalisation in front: uint8 (N,28,28) -> logits."""
    from digitlab.artifact import load_artifact
    from digitlab.models.registry import Normalization

    model, meta = load_artifact(folder)
    return with_normalization(model, Normalization(*meta.normalization))


def with_normalization(model, norm):
    """``model`` behind its input scaling, in eval mode: uint8 (N,28,28) -> logits; the form
    every exported graph and every benchmarked backend takes."""
    import torch

    class Normalised(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model(norm.apply(pixels))

    return Normalised().eval()


def onnx_bytes(model, weights_digest: str = "") -> bytes:
    """The ONNX graph (uint8 pixels -> logits) of a module made by :func:`with_normalization`,
    unchecked: :func:`export_checked` is the path that compares it with torch."""
    return _to_onnx_bytes(model, weights_digest)


def _to_onnx_bytes(model, weights_digest: str) -> bytes:
    import onnx
    import torch

    buf = io.BytesIO()
    example = torch.zeros(2, 28, 28, dtype=torch.uint8)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript
        # and is slower; for these small static graphs both give the same ops.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buf,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, {WEIGHTS_KEY: weights_digest})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _max_abs_diff(model, onnx_bytes: bytes, images: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    got = ort_session(onnx_bytes, threads=0).run(None, {"pixels": images})[0]
    return float(np.abs(expected - got).max())
