"""Inference backends behind one call shape, for ``digitlab bench``: uint8 digits
(N,28,28) in, float32 logits (N,C) out.

torch eager and torch.compile run the module; ONNX Runtime and OpenVINO run its ONNX graph,
in fp32 or int8 (see :mod:`digitlab.quantize`). A backend that cannot run here raises
:class:`Unavailable` with the reason, so a bench reports it instead of failing.

Threads: ``parallel="batch"`` (the default for ONNX Runtime and OpenVINO) cuts a batch into
slices of at most 32 digits and runs them side by side, one thread each; ``"intra"`` runs
the whole batch with the runtime's own multi-threaded kernels. Slices win twice: a small
convolution split across threads waits at every barrier (for a core another program may
hold), and 32 digits' activations fit in L2 where 256 digits' do not (OpenVINO fp32 ran
1.9x faster in slices of 32 than of 128; docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata

import numpy as np

PARALLEL = ("batch", "intra")


class Unavailable(Exception):
    """This backend does not run here; the message says why."""


@dataclass
class Runner:
    """A ready backend: ``run(uint8 images) -> logits``; ``setup_s`` is what building it took
    (compiling, quantising); ``close()`` frees its threads."""

    name: str
    precision: str
    detail: str
    run: Callable[[np.ndarray], np.ndarray]
    setup_s: float = 0.0
    close: Callable[[], None] = lambda: None


def torch_eager(model, device: str = "cpu") -> Runner:
    """The module as PyTorch runs it by default (``model`` takes uint8 pixels)."""
    import torch

    model = _on(model, device)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images).to(device)).float().cpu().numpy()

    threads = f"{torch.get_num_threads()} threads" if device == "cpu" else device
    return Runner("torch-eager", "fp32", f"torch {torch.__version__}, {threads}", run)


def _on(model, device: str):
    """``model`` on ``device``; a copy when that is not the CPU, so the caller's module stays
    on the CPU for ONNX export."""
    return model if device == "cpu" else copy.deepcopy(model).to(device)


def torch_compiled(model, example: np.ndarray, device: str = "cpu") -> Runner:
    """torch.compile (inductor), compiled for ``example``'s shape before it is timed."""
    import torch

    start = time.perf_counter()
    try:
        compiled = torch.compile(_on(model, device))
        with torch.inference_mode():
            compiled(torch.from_numpy(example).to(device))
    except Exception as exc:  # inductor fails in many ways: no compiler, unsupported op
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise Unavailable(f"{type(exc).__name__}: {lines[0][:200]}") from None
    setup = time.perf_counter() - start

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(torch.from_numpy(images).to(device)).float().cpu().numpy()

    detail = f"torch {torch.__version__} inductor, compiled in {setup:.1f} s"
    return Runner("torch-compile", "fp32", detail, run, setup)


SLICE_ROWS = 32  # images per slice: 32 digits' activations stay in L2 (see module doc)


def batch_slices(n: int, workers: int, rows: int = SLICE_ROWS) -> list[slice]:
    """At least ``workers`` slices of ``n`` rows (when n allows), none longer than ``rows``."""
    step = max(1, min(-(-n // workers), rows))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def onnxruntime(
    graph: bytes,
    threads: int,
    parallel: str = "batch",
    name: str = "ort-fp32",
    precision: str = "fp32",
    note: str = "",
) -> Runner:
    """ONNX Runtime's CPU provider (ORT's defaults: all graph optimisations, sequential)."""
    import onnxruntime as ort

    from digitlab.runtime import ort_session

    session = ort_session(graph, 1 if parallel == "batch" else threads)
    pool = ThreadPoolExecutor(threads) if parallel == "batch" and threads > 1 else None

    def run_one(images: np.ndarray) -> np.ndarray:
        return session.run(None, {"pixels": images})[0]

    def run(images: np.ndarray) -> np.ndarray:
        if parallel != "batch" or len(images) < 2:
            return run_one(images)
        parts = [images[s] for s in batch_slices(len(images), threads)]
        outs = pool.map(run_one, parts) if pool else map(run_one, parts)
        return np.concatenate(list(outs))

    how = (
        f"slices of up to {SLICE_ROWS} digits on {threads} threads side by side"
        if parallel == "batch"
        else f"whole batch on {threads} intra-op threads"
    )
    detail = f"onnxruntime {ort.__version__}, {how}" + (f", {note}" if note else "")
    return Runner(name, precision, detail, run, close=lambda: pool and pool.shutdown())


def openvino(
    graph: bytes,
    threads: int,
    parallel: str = "batch",
    name: str = "openvino-fp32",
    precision: str = "fp32",
    note: str = "",
) -> Runner:
    """OpenVINO's CPU plugin on the ONNX graph. ``precision`` "fp32" pins f32 arithmetic
    (on CPUs with AVX-512 BF16 the plugin otherwise computes in bfloat16), "bf16" allows
    bfloat16, "int8" runs a QDQ graph's int8 parts in int8 (the rest in f32)."""
    try:
        import openvino as ov
    except ImportError:
        raise Unavailable("openvino is not installed (pip install 'digitlab[openvino]')") from None
    core = ov.Core()
    model = core.read_model(graph)
    streams = threads if parallel == "batch" else 1
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }
    compiled: dict[int, tuple] = {}  # slice length -> (compiled model, its infer requests)

    def requests(rows: int, count: int) -> list:
        if rows not in compiled:
            m = model.clone()
            m.reshape({0: [rows, 28, 28]})  # static shapes: the plugin's fastest kernels
            compiled[rows] = (core.compile_model(m, "CPU", config), [])
        c, reqs = compiled[rows]
        reqs += [c.create_infer_request() for _ in range(count - len(reqs))]
        return reqs[:count]

    def run(images: np.ndarray) -> np.ndarray:
        n = len(images)
        parts = batch_slices(n, streams) if parallel == "batch" else [slice(0, n)]
        rows = parts[0].stop - parts[0].start
        if parts[-1].stop - parts[-1].start < rows:  # pad the last slice to the common shape
            pad = np.zeros((rows * len(parts) - n, 28, 28), np.uint8)
            images = np.concatenate([images, pad])
            parts[-1] = slice(parts[-1].start, parts[-1].start + rows)
        reqs = requests(rows, len(parts))
        for req, s in zip(reqs, parts, strict=True):
            req.start_async({0: images[s]}, share_inputs=True)
        outs = []
        for req in reqs:
            req.wait()
            outs.append(req.get_output_tensor(0).data.copy())
        return np.concatenate(outs)[:n]

    how = (
        f"slices of up to {SLICE_ROWS} digits on {streams} streams"
        if parallel == "batch"
        else (f"whole batch, 1 stream of {threads} threads")
    )
    detail = f"openvino {metadata.version('openvino')}, {how}"
    return Runner(name, precision, detail + (f", {note}" if note else ""), run)
