"""ONNX export and the ONNX Runtime backend the server runs on.

The exported graph takes raw uint8 pixels (N,28,28) and returns logits (N,C): the model's
normalisation is baked in, so a runtime needs nothing from model.json to feed it. Every export
is checked against PyTorch on real MNIST test digits before it is written. The graph carries
the SHA-256 of the weights it came from, so a stale model.onnx (weights retrained since) is
refused instead of silently serving the old model.

``OnnxBackend`` imports onnxruntime only: a process serving with it never imports torch.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError

ONNX_FILE = "model.onnx"
WEIGHTS_KEY = "digitlab.weights_sha256"
TOLERANCE = 1e-4  # max |logit difference| allowed between torch and ONNX Runtime
OPSET = 17


@dataclass
class ExportResult:
    """Where the ONNX file went and how closely it matches torch."""

    path: Path
    max_abs_diff: float
    checked: int
    seconds: float


def weights_sha256(folder: str | os.PathLike) -> str:
    from digitlab.artifact import WEIGHTS

    return hashlib.sha256((Path(folder) / WEIGHTS).read_bytes()).hexdigest()


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
    return with_normalization(model, Normalization(*meta["normalization"]))


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


def ort_session(model: bytes | str, threads: int):
    """An ONNX Runtime CPU session on ``threads`` intra-op threads, warnings silenced."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0 = ORT's default (all cores)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def load_session(path: str | os.PathLike, threads: int | None, what: str = "ONNX model"):
    """A session on the ONNX file at ``path``, on ``threads`` intra-op threads (by default
    ``$DIGITLAB_ONNX_THREADS`` or 1); a file that does not load is one error naming ``what``."""
    if threads is None:
        threads = int(os.environ.get("DIGITLAB_ONNX_THREADS", "1"))
    try:
        return ort_session(str(path), threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise DigitlabError(f"{path}: not a loadable {what} ({exc})") from None


class OnnxBackend:
    """ONNX Runtime on ``folder/model.onnx``: uint8 images (N,28,28) -> float32 logits (N,C).

    One intra-op thread by default: the server runs many small requests side by side (ORT
    releases the GIL), which uses the cores better than splitting one 28x28 image across them.
    ``DIGITLAB_ONNX_THREADS`` overrides it. ``path`` is an ONNX file elsewhere than
    ``folder/model.onnx``.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        threads: int | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        folder = Path(folder)
        path = Path(path) if path else folder / ONNX_FILE
        if not path.is_file():
            raise DigitlabError(
                f"{folder}: no {ONNX_FILE}; make it with `digitlab export {folder} --format onnx`"
            )
        self.session = load_session(path, threads)
        built_from = self.session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)
        if built_from and built_from != weights_sha256(folder):
            raise DigitlabError(
                f"{path} was exported from other weights than {folder}/model.safetensors; "
                f"re-export with `digitlab export {folder} --format onnx`"
            )
        self.path = path

    def logits(self, images_u8: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images_u8, dtype=np.uint8)
        if x.ndim == 2:
            x = x[None]
        return self.session.run(None, {"pixels": x})[0]
