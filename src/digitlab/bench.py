"""``digitlab bench``: what ``caffe time`` measures, and how fast each backend runs inference.

For one model and batch size:

* training step: average forward, backward and forward+backward time per batch, in total
  and per layer (forward/backward hooks), with each layer's parameters and FLOPs
  (:mod:`digitlab.summary`) and the activation memory autograd keeps for backward;
* inference: images/s, latency and achieved GFLOP/s of every backend (torch eager,
  torch.compile, ONNX Runtime fp32/int8, OpenVINO fp32/int8), each beside its accuracy on
  the 10,000 MNIST test digits (a trained model) so a faster variant never hides a worse one;
* the fp32 peak of this machine: 2048x2048 matrix products in ONNX Runtime (multi-threaded,
  and one per thread side by side) and in torch, timed in the same rounds as the backends.

Timings on a shared CPU are noisy, so backends are timed in interleaved rounds (each round
runs every backend once, in a shuffled order) and the median round is reported.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.quantize import DEFAULT_OPENVINO, DEFAULT_ORT, QuantConfig
from digitlab.system import resolve_device

BACKENDS = (
    "torch-eager",
    "torch-compile",
    "ort-fp32",
    "ort-int8",
    "openvino-fp32",
    "openvino-int8",
)
OPTIONAL_BACKENDS = ("openvino-bf16",)
PEAK_SIZE = 2048  # matrix side for the fp32 peak: large enough to be compute-bound
UNTRAINED = "n/a (untrained)"


@dataclass
class BenchModel:
    """What a bench runs: the module, its input scaling, and whether it learned anything."""

    name: str
    module: Any  # torch.nn.Module, float (N,1,28,28) -> logits
    normalization: Any  # digitlab.models.Normalization
    trained: bool
    source: str


@dataclass
class BackendResult:
    name: str
    precision: str
    status: str  # "ok" or "unavailable: reason"
    detail: str = ""
    images_per_s: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    gflops: float | None = None
    vs_torch_eager: float | None = None
    accuracy: float | None = None
    accuracy_note: str = ""
    setup_s: float = 0.0
    rounds: list[float] = field(default_factory=list)

    def accuracy_text(self) -> str:
        if self.accuracy is None:
            return self.accuracy_note or "-"
        return f"{self.accuracy:.2%}"


def load_bench_model(spec: str) -> BenchModel:
    """A zoo name (fresh random weights) or a run/model folder (its trained weights)."""
    from digitlab.artifact import load_artifact
    from digitlab.models import MODELS, create_model, get_entry

    if spec in MODELS:
        entry = get_entry(spec)
        return BenchModel(spec, create_model(spec), entry.normalization, False, "zoo")
    if not Path(spec).exists() and "/" not in spec and not spec.startswith("."):
        get_entry(spec)  # raises: unknown model, with the known names
    from digitlab.models.registry import Normalization

    module, meta = load_artifact(spec)
    return BenchModel(
        meta.architecture, module, Normalization(*meta.normalization), True, str(spec)
    )


# ------------------------------------------------------------------------- training step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _training_batch(bm: BenchModel, batch: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8, generator=g)
    x = bm.normalization.apply(pixels).to(device)
    module = copy.deepcopy(bm.module).to(device).train()  # batch norm statistics stay intact
    with torch.no_grad():
        classes = int(module(x[:1]).shape[1])
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    return module, x, y


def time_training(bm: BenchModel, batch: int, device: str, iters: int) -> dict[str, float]:
    """Mean forward, backward and forward+backward ms per batch (cross-entropy loss)."""
    import torch.nn.functional as F

    module, x, y = _training_batch(bm, batch, device)
    fwd, bwd = [], []
    for i in range(iters + 2):  # the first two warm the allocator and kernels up
        module.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        loss = F.cross_entropy(module(x), y)
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        if i >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    f, b = statistics.fmean(fwd) * 1e3, statistics.fmean(bwd) * 1e3
    return {
        "forward_ms": f,
        "backward_ms": b,
        "forward_backward_ms": f + b,
        "images_per_s": batch / (f + b) * 1e3,
    }


def time_layers(bm: BenchModel, batch: int, device: str, iters: int) -> dict[str, tuple]:
    """Per leaf module: (mean forward ms, mean backward ms) of a training step.

    A layer's backward runs from the gradient of its output arriving to the gradient of its
    input leaving. The first layer's input needs no gradient, so its backward ends when the
    whole backward pass does (PyTorch fires its hook early, before the weight gradient).
    """
    import warnings

    import torch.nn.functional as F

    module, x, y = _training_batch(bm, batch, device)
    names = {m: n for n, m in module.named_modules()}
    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    clock: dict[str, float] = {}
    fwd = {names[m]: 0.0 for m in leaves}
    bwd = dict(fwd)
    first: set[str] = set()

    def stamp(key: str) -> None:
        _sync(device)
        clock[key] = time.perf_counter()

    def fwd_pre(m, inp):
        stamp("f" + names[m])

    def fwd_post(m, inp, out):
        stamp("F" + names[m])
        if not any(getattr(t, "requires_grad", False) for t in inp):
            first.add(names[m])

    def bwd_pre(m, grad_out):
        stamp("b" + names[m])

    def bwd_post(m, grad_in, grad_out):
        stamp("B" + names[m])

    handles = []
    for m in leaves:
        handles += [m.register_forward_pre_hook(fwd_pre), m.register_forward_hook(fwd_post)]
        handles += [m.register_full_backward_pre_hook(bwd_pre)]
        handles += [m.register_full_backward_hook(bwd_post)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "full backward hook is firing ... no inputs"
            for i in range(iters + 2):
                module.zero_grad(set_to_none=True)
                clock.clear()
                F.cross_entropy(module(x), y).backward()
                stamp("end")
                if i < 2:
                    continue
                for m in leaves:
                    n = names[m]
                    fwd[n] += clock["F" + n] - clock["f" + n]
                    if "b" + n in clock:
                        done = clock["end"] if n in first else clock["B" + n]
                        bwd[n] += done - clock["b" + n]
    finally:
        for h in handles:
            h.remove()
    return {n: (fwd[n] / iters * 1e3, bwd[n] / iters * 1e3) for n in fwd}


def activation_bytes(bm: BenchModel, batch: int, device: str) -> dict[str, int]:
    """Bytes per batch: tensors autograd saves for backward (parameters excluded) in a
    training step, and the sum of every layer's output."""
    import torch

    module, x, _ = _training_batch(bm, batch, device)
    params = {p.data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    outputs = []
    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    hook = lambda m, i, o: outputs.append(o.numel() * o.element_size())  # noqa: E731
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(x)
    finally:
        for h in handles:
            h.remove()
    return {"saved_for_backward": sum(saved.values()), "layer_outputs": sum(outputs)}


# ------------------------------------------------------------------------- inference


@dataclass
class Timed:
    """Something timed in the rounds: ``call()`` does ``work`` units (images or FLOPs)."""

    key: str
    call: Callable[[], object]
    work: float
    rates: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def interleaved(items: Sequence[Timed], repeats: int, round_s: float = 0.1) -> None:
    """Time every item in ``repeats`` rounds, in a new random order each round: threads that
    spin after a call (torch's OpenMP, ONNX Runtime's intra-op pool) slow whatever runs next,
    and a fixed order would always charge that to the same neighbour. An item's round calls
    it until ``round_s`` has passed (at least once), so a backend stalled by a busy core
    costs time, not a fixed number of slow calls. Fills ``rates`` and ``seconds``."""
    import random

    for item in items:
        for _ in range(3):  # warm-up: allocations, lazy kernel selection
            item.call()
    order = list(items)
    for r in range(repeats):
        random.Random(r).shuffle(order)
        for item in order:
            calls, start = 0, time.perf_counter()
            now = start
            while calls == 0 or now - start < round_s:
                item.call()
                calls += 1
                item.seconds.append(time.perf_counter() - now)
                now = time.perf_counter()
            item.rates.append(item.work * calls / (now - start))


def peak_items(threads: int, size: int = PEAK_SIZE) -> list[Timed]:
    """fp32 matrix products of ``size``^2, work counted in FLOPs: ONNX Runtime (its MLAS
    kernels, which its convolutions use) with ``threads`` threads, and ``threads`` such
    products side by side with one thread each (how the backends use the cores, immune to a
    busy core stalling the others at a barrier); and torch with ``threads`` threads."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), np.float32) for _ in range(2))
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ABC"]
    nodes = [helper.make_node("MatMul", ["A", "B"], ["C"])]
    graph = helper.make_graph(nodes, "matmul", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)

    from digitlab.runtime import ort_session

    multi, single = (ort_session(model.SerializeToString(), n) for n in (threads, 1))
    pool = ThreadPoolExecutor(threads)
    feed = {"A": a, "B": b}

    def side_by_side() -> None:
        list(pool.map(lambda _: single.run(None, feed), range(threads)))

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    flops = 2.0 * size**3
    return [
        Timed("peak:onnxruntime", lambda: multi.run(None, feed), flops),
        Timed(f"peak:onnxruntime {threads}x1", side_by_side, flops * threads),
        Timed("peak:torch", lambda: torch.mm(ta, tb), flops),
    ]


def _padded_batches(images: np.ndarray, batch: int):
    """``images`` in batches of exactly ``batch`` (the last one padded with blanks), so
    backends compiled for one shape never recompile; yields (batch, real rows)."""
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        rows = len(part)
        if rows < batch:
            part = np.concatenate([part, np.zeros((batch - rows, 28, 28), np.uint8)])
        yield np.ascontiguousarray(part), rows


def mnist_test_accuracy(run: Callable[[np.ndarray], np.ndarray], batch: int) -> float:
    """Top-1 accuracy on the 10,000 MNIST test digits (argmax over every output)."""
    from digitlab.data.dataset import load_split

    test = load_split("test")
    chunk = max(batch, 1)
    preds = [run(part)[:rows].argmax(1) for part, rows in _padded_batches(test.images, chunk)]
    return float((np.concatenate(preds) == test.labels).mean())


def parse_backend(spec: str) -> tuple[str, QuantConfig | None]:
    """``"ort-int8:qdq-pt-s8"`` -> ("ort-int8", its QuantConfig); plain names pass through."""
    name, _, variant = spec.partition(":")
    if name not in BACKENDS + OPTIONAL_BACKENDS:
        known = ", ".join(BACKENDS + OPTIONAL_BACKENDS)
        raise DigitlabError(f"unknown backend {name!r}; known backends: {known}")
    if variant and not name.endswith("int8"):
        raise DigitlabError(f"backend {spec!r}: only the int8 backends take a :VARIANT")
    if name.endswith("int8"):
        default = DEFAULT_OPENVINO if name.startswith("openvino") else DEFAULT_ORT
        return name, QuantConfig.parse(variant) if variant else default
    return name, None


def build_runner(
    spec: str,
    wrapped,
    graphs: Callable[[QuantConfig | None], bytes],
    example: np.ndarray,
    threads: int,
    device: str,
    parallel: str,
):
    """The runner for one backend spec; :class:`~digitlab.runtimes.Unavailable` if it
    cannot run here. ``graphs(config)`` gives the fp32 (None) or int8 ONNX graph."""
    from digitlab import runtimes

    name, quant = parse_backend(spec)
    start = time.perf_counter()
    if name == "torch-eager":
        return runtimes.torch_eager(wrapped, device)
    if name == "torch-compile":
        return runtimes.torch_compiled(wrapped, example, device)
    make = runtimes.onnxruntime if name.startswith("ort") else runtimes.openvino
    precision = name.rsplit("-", 1)[1]
    if make is runtimes.openvino:
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise runtimes.Unavailable(
                "openvino is not installed (pip install 'digitlab[openvino]')"
            ) from None
    graph = graphs(quant)
    note = quant.description if quant else ""
    runner = make(graph, threads, parallel, name=spec, precision=precision, note=note)
    runner.run(example)  # OpenVINO compiles for the shape here
    runner.setup_s = time.perf_counter() - start
    return runner


# ------------------------------------------------------------------------- the bench


@dataclass
class BenchReport:
    model: str
    source: str
    trained: bool
    batch: int
    device: str
    threads: int
    parallel: str
    repeats: int
    params: int
    macs_per_image: int
    flops_per_image: int
    training: dict[str, float]
    layers: list[dict[str, Any]]
    activation_bytes: dict[str, int]
    peak_gflops: dict[str, float]
    backends: list[BackendResult]
    load_average: list[float]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        for b in out["backends"]:
            b.pop("rounds")
        return out


def default_threads() -> int:
    from digitlab.system import cpu_cores

    return cpu_cores()


def bench(
    model: str | BenchModel,
    batch: int = 64,
    device: str = "cpu",
    *,
    threads: int | None = None,
    backends: Sequence[str] = BACKENDS,
    parallel: str = "batch",
    repeats: int = 7,
    training_iters: int = 10,
    accuracy: bool = True,
    peak: bool = True,
    round_s: float = 0.1,
    graph_cache: dict[str, bytes] | None = None,
) -> BenchReport:
    """Benchmark ``model`` (a zoo name, a run/model folder or a :class:`BenchModel`).

    ``training_iters=0`` skips the training step (inference only); ``graph_cache`` keeps
    the ONNX graphs (fp32 and each int8 variant) of one BenchModel across calls.
    """
    import torch

    from digitlab.export import onnx_bytes, with_normalization
    from digitlab.quantize import quantize_onnx
    from digitlab.runtimes import PARALLEL, Unavailable
    from digitlab.summary import summarize, totals

    if batch < 1:
        raise DigitlabError(f"--batch must be at least 1, not {batch}")
    if parallel not in PARALLEL:
        raise DigitlabError(f"--parallel must be one of {', '.join(PARALLEL)}, not {parallel!r}")
    device = resolve_device(device)
    for spec in backends:
        parse_backend(spec)
    bm = model if isinstance(model, BenchModel) else load_bench_model(model)
    threads = threads or default_threads()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = summarize(bm.module)
        total = totals(rows)
        training, layers, memory = {}, [], {}
        if training_iters:
            training = time_training(bm, batch, device, training_iters)
            per_layer = time_layers(bm, batch, device, training_iters)
            layers = [
                {**r.to_dict(), "forward_ms": per_layer[r.name][0],
                 "backward_ms": per_layer[r.name][1]}
                for r in rows
                if r.name in per_layer
            ]  # fmt: skip
            memory = activation_bytes(bm, batch, device)

        wrapped = with_normalization(bm.module, bm.normalization)
        cache = graph_cache if graph_cache is not None else {}

        def graphs(quant: QuantConfig | None) -> bytes:
            if "fp32" not in cache:
                cache["fp32"] = onnx_bytes(wrapped)
            if quant is None:
                return cache["fp32"]
            if quant.name not in cache:
                cache[quant.name] = quantize_onnx(cache["fp32"], quant)
            return cache[quant.name]

        example = np.random.default_rng(1).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
        results: list[BackendResult] = []
        runners = []
        for spec in backends:
            try:
                runner = build_runner(spec, wrapped, graphs, example, threads, device, parallel)
            except Unavailable as exc:
                name, quant = parse_backend(spec)
                results.append(BackendResult(spec, name.rsplit("-", 1)[1], f"unavailable: {exc}"))
                continue
            result = BackendResult(
                runner.name, runner.precision, "ok", runner.detail, setup_s=runner.setup_s
            )
            if bm.trained and accuracy:
                result.accuracy = mnist_test_accuracy(runner.run, batch)
            else:
                result.accuracy_note = UNTRAINED if not bm.trained else "not measured"
            results.append(result)
            runners.append((result, runner))

        items = [Timed(r.name, lambda run=rn.run: run(example), batch) for r, rn in runners]
        peaks = peak_items(threads) if peak else []
        interleaved([*items, *peaks], repeats, round_s)
        for (result, runner), item in zip(runners, items, strict=True):
            _fill_timing(result, item, total["flops"])
            runner.close()
        eager = next((r for r in results if r.name == "torch-eager" and r.images_per_s), None)
        for r in results:
            if eager and r.images_per_s:
                r.vs_torch_eager = r.images_per_s / eager.images_per_s
        peak_gflops = {p.key.split(":")[1]: statistics.median(p.rates) / 1e9 for p in peaks}
    finally:
        torch.set_num_threads(old_threads)
    return BenchReport(
        bm.name, bm.source, bm.trained, batch, device, threads, parallel, repeats,
        total["params"], total["macs"], total["flops"], training, layers, memory,
        peak_gflops, results, [round(x, 2) for x in os.getloadavg()],
    )  # fmt: skip


def _fill_timing(result: BackendResult, item: Timed, flops_per_image: int) -> None:
    result.rounds = item.rates
    result.images_per_s = statistics.median(item.rates)
    result.latency_ms_p50 = statistics.median(item.seconds) * 1e3
    result.latency_ms_p99 = float(np.percentile(item.seconds, 99)) * 1e3
    result.gflops = result.images_per_s * flops_per_image / 1e9


# ------------------------------------------------------------------------- tables


BACKEND_COLUMNS = (
    "backend", "precision", "images/s", "latency p50 ms", "p99 ms", "GFLOP/s", "% of peak",
    "x torch eager", "test accuracy",
)  # fmt: skip


def backend_rows(report: BenchReport) -> list[list[str]]:
    """The backend table as text cells (:data:`BACKEND_COLUMNS`), shared by the CLI and
    benchmarks/inference.py."""
    peak = max(report.peak_gflops.values(), default=0.0)
    rows = []
    for b in report.backends:
        if b.images_per_s is None:
            rows.append([b.name, b.precision, b.status, *[""] * 5, b.accuracy_text()])
            continue
        rows.append(
            [
                b.name,
                b.precision,
                f"{b.images_per_s:,.0f}",
                f"{b.latency_ms_p50:.3f}",
                f"{b.latency_ms_p99:.3f}",
                f"{b.gflops:.1f}",
                f"{b.gflops / peak:.0%}" if peak else "",
                f"{b.vs_torch_eager:.2f}" if b.vs_torch_eager else "",
                b.accuracy_text(),
            ]
        )
    return rows


def layer_rows(report: BenchReport) -> list[list[str]]:
    """Per layer: name, type, output shape, params, MFLOPs per batch, forward/backward ms."""
    return [
        [
            r["name"],
            r["type"],
            "x".join(map(str, r["output_shape"])),
            f"{r['params']:,}",
            f"{r['flops'] * report.batch / 1e6:,.2f}",
            f"{r['forward_ms']:.3f}",
            f"{r['backward_ms']:.3f}",
        ]
        for r in report.layers
    ]
