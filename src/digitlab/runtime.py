"""The runtimes that load a saved model and turn uint8 images into logits.

``OnnxBackend`` imports onnxruntime only: a process serving with it never imports torch.
``TorchBackend`` runs the safetensors weights. The ONNX graph carries the SHA-256 of the
weights it came from, so a stale model.onnx (weights retrained since) is refused instead of
silently serving the old model. :func:`ort_session` is the one place an ONNX Runtime session
is built (server, line model, export check, benchmarks).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from digitlab.errors import DigitlabError

ONNX_FILE = "model.onnx"
WEIGHTS_KEY = "digitlab.weights_sha256"


def weights_sha256(folder: str | os.PathLike) -> str:
    from digitlab.artifact import WEIGHTS

    return hashlib.sha256((Path(folder) / WEIGHTS).read_bytes()).hexdigest()


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
            raise StaleExport(
                f"{path} was exported from other weights than {folder}/model.safetensors; "
                f"re-export with `digitlab export {folder} --format onnx`"
            )
        self.path = path

    def logits(self, images_u8: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images_u8, dtype=np.uint8)
        if x.ndim == 2:
            x = x[None]
        return self.session.run(None, {"pixels": x})[0]


class Backend(Protocol):
    """Turns uint8 images (N,28,28) into logits (N,C) as float32 numpy."""

    def logits(self, images_u8: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """The safetensors model in PyTorch, normalised as its model.json says."""

    def __init__(self, folder: str | os.PathLike, device: str = "cpu") -> None:
        from digitlab.artifact import load_artifact
        from digitlab.models.registry import Normalization

        self.model, self.meta = load_artifact(folder, device)
        self.norm = Normalization(*self.meta.normalization)
        self.device = device

    def logits(self, images_u8: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        import torch

        from digitlab.evaluate import batched_logits

        x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(self.device)
        return batched_logits(self.model, x, self.norm.apply, batch_size).cpu().numpy()


class StaleExport(DigitlabError):
    """model.onnx was exported from other weights than the folder's model.safetensors."""


def load_backend(folder: str | os.PathLike, backend: str = "auto") -> Backend:
    """``torch``, ``onnx``, or ``auto``: ONNX Runtime where the folder holds a model.onnx
    exported from its weights (it needs no torch and is faster on small batches:
    docs/other-hands-training.md), else torch."""
    if backend == "auto":
        if (Path(folder) / ONNX_FILE).is_file():
            try:
                return OnnxBackend(folder)
            except StaleExport:
                pass
        return TorchBackend(folder)
    if backend == "torch":
        return TorchBackend(folder)
    if backend == "onnx":
        return OnnxBackend(folder)
    raise DigitlabError(f"unknown backend {backend!r}; use auto, torch or onnx")
