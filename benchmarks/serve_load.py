"""Load test of `digitlab serve`: requests/s and latency at concurrency 1, 16 and 64.

The server runs as `python -m digitlab serve` (ONNX Runtime); the load comes from a separate
process (this script with ``--client``): keep-alive HTTP/1.1 connections on asyncio, each
sending one multipart PNG per request, so the client costs as little CPU as possible on a
machine whose cores it shares with the server. Reports requests/s, p50/p99 latency, errors,
the server's resident memory and its start-up time (launch to the first /healthz 200), then
where a request's time goes (decode, preprocessing, ONNX, JSON). Rewrites its own section of
docs/serving.md (between the serve_load.py markers), leaving the rest of the page alone.

Run: ``DIGITLAB_MNIST_MIRROR=../shared/data/mnist .venv/bin/python benchmarks/serve_load.py``
(``--model RUN`` for another model than the bundled one; ``--requests`` per level).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
LEVELS = (1, 16, 64)
BEGIN, END = "<!-- serve_load.py: begin -->", "<!-- serve_load.py: end -->"
TARGET = {"rps_at_16": 500, "p99_ms_at_16": 50, "rss_mb": 250, "ready_s": 2.0}


# ----------------------------------------------------------------------------- images


def sample_images() -> dict[str, bytes]:
    """The payloads: an MNIST test digit as a 28x28 PNG (dark on white, as a scan), and a
    280x280 canvas drawing like the page sends."""
    from PIL import Image, ImageDraw

    from digitlab.data.dataset import load_split

    def png(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()

    digit = 255 - load_split("test").images[0]
    canvas = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(canvas).line(
        [(70, 50), (210, 50), (168, 126), (126, 238)], fill="black", width=20, joint="curve"
    )
    return {"28x28 MNIST PNG": png(Image.fromarray(digit)), "280x280 canvas PNG": png(canvas)}


def multipart_request(port: int, image: bytes) -> bytes:
    boundary = "bench-boundary-3c9e"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="image"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


# ----------------------------------------------------------------------------- client


async def _connection(port: int, payload: bytes, count: int, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200 or b'"digit"' not in body:
                errors.append(status)
    finally:
        writer.close()


async def _load(port: int, image: bytes, concurrency: int, requests: int) -> dict:
    payload = multipart_request(port, image)
    per_conn = max(1, requests // concurrency)
    latencies: list[float] = []
    errors: list[int] = []
    await asyncio.gather(*(_connection(port, payload, 5, [], []) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(
        *(_connection(port, payload, per_conn, latencies, errors) for _ in range(concurrency))
    )
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def run_client(port: int, image_file: str, concurrency: int, requests: int) -> None:
    image = Path(image_file).read_bytes()
    print(json.dumps(asyncio.run(_load(port, image, concurrency, requests))))


def load_from_another_process(port: int, image: Path, concurrency: int, requests: int) -> dict:
    cmd = [sys.executable, __file__, "--client", str(port), str(image), str(concurrency)]
    done = subprocess.run([*cmd, str(requests)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# ----------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, workers: int, log: Path) -> tuple[subprocess.Popen, int, float]:
    """(process, port, seconds from launch to the first /healthz 200)."""
    port = free_port()
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port)]
    cmd += ["--workers", str(workers)] + (["--model", model] if model else [])
    start = time.perf_counter()
    with open(log, "wb") as fh:
        process = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return process, port, time.perf_counter() - start
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text()}") from None
            time.sleep(0.01)


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes, in MB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = [int(k) for k in fh.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def server_totals(port: int) -> dict[str, float]:
    """Seconds and counts of /v1/predict requests and of predictor calls, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        text = r.read().decode()

    def total(prefix: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
        )

    return {
        "http_s": total('digitlab_http_request_duration_seconds_sum{route="/v1/predict"}'),
        "http_n": total('digitlab_http_request_duration_seconds_count{route="/v1/predict"}'),
        "inf_s": total("digitlab_inference_duration_seconds_sum"),
        "inf_n": total("digitlab_inference_duration_seconds_count"),
    }


def server_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms per request in the server (arrival to response end) and in the predictor."""
    d = {k: after[k] - before[k] for k in before}
    return {
        "request_ms": 1e3 * d["http_s"] / max(d["http_n"], 1),
        "predictor_ms": 1e3 * d["inf_s"] / max(d["inf_n"], 1),
    }


# ----------------------------------------------------------------------------- profile


def stage_times(model: str | None, images: dict[str, bytes], n: int = 300) -> dict[str, dict]:
    """Milliseconds per image of each stage in this process, one thread, no HTTP."""
    from digitlab.predict import Predictor
    from digitlab.preprocess import load_image, prepare

    predictor = Predictor(model, backend="onnx")
    out = {}
    for name, data in images.items():
        img = load_image(data)
        prep = prepare(img)
        result = predictor.predict_image(data)
        stages = {
            "decode": lambda data=data: load_image(data).load(),
            "preprocess": lambda img=img: prepare(img),
            "onnx": lambda prep=prep: predictor.backend.logits(prep.image[None]),
            "json": lambda result=result: json.dumps(result),
            "whole predict_image": lambda data=data: predictor.predict_image(data),
        }
        out[name] = {}
        for stage, fn in stages.items():
            fn()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            out[name][stage] = (time.perf_counter() - start) / n * 1e3
    return out


# ----------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Run or model folder [the bundled model].")
    parser.add_argument("--requests", type=int, default=3000, help="Requests per level.")
    parser.add_argument("--workers", default="1,2", help="Worker counts to try.")
    parser.add_argument("--repeats", type=int, default=3, help="Tries per level (median kept).")
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, image, concurrency, requests = args.client
        run_client(int(port), image, int(concurrency), int(requests))
        return

    images = sample_images()
    args.load_before = os.getloadavg()[0]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"digitlab-serve-load-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, (name, data) in enumerate(images.items()):
        files[name] = tmp / f"image{i}.png"
        files[name].write_bytes(data)

    runs = []
    for workers in [int(w) for w in args.workers.split(",")]:
        process, port, ready = start_server(args.model, workers, tmp / f"server-{workers}.log")
        idle_rss = rss_mb(process.pid)
        try:
            for name in images:
                levels = LEVELS if name.startswith("28x28") else (16,)
                for c in levels:
                    tries = []
                    for _ in range(args.repeats):
                        before = server_totals(port)
                        t = load_from_another_process(port, files[name], c, args.requests)
                        tries.append({**t, **server_split(before, server_totals(port))})
                    # Other jobs share this machine: report the median try, and the spread.
                    tries.sort(key=lambda t: t["rps"])
                    r = tries[len(tries) // 2]
                    r.update(
                        rps_min=tries[0]["rps"],
                        rps_max=tries[-1]["rps"],
                        errors=sum(t["errors"] for t in tries),
                    )
                    r.update(
                        workers=workers,
                        image=name,
                        ready_s=ready,
                        idle_rss_mb=idle_rss,
                        rss_mb=rss_mb(process.pid),
                    )
                    runs.append(r)
                    print(
                        f"workers {workers} {name} c={c}: {r['rps']:.0f} req/s, p50 "
                        f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['errors']} errors, "
                        f"RSS {r['rss_mb']:.0f} MB",
                        flush=True,
                    )
        finally:
            process.terminate()
            process.wait(10)
    stages = stage_times(args.model, images)
    write_doc(runs, stages, args)


def model_name(model: str | None) -> str:
    from digitlab.artifact import find_model, read_meta

    meta = read_meta(find_model(model))
    accuracy = meta.metrics.get("test_accuracy")
    where = "the bundled model" if model is None else "a run"
    return f"{meta.architecture} ({where}, test accuracy {accuracy:.2%})"


def write_doc(runs: list[dict], stages: dict, args: argparse.Namespace) -> None:
    from digitlab.fileio import write_text_atomic

    lines = [
        BEGIN,
        "## Measured: `digitlab serve` under load",
        "",
        "Written by `benchmarks/serve_load.py`. The server is `python -m digitlab serve` "
        "(FastAPI, uvicorn with uvloop and httptools, ONNX Runtime with one intra-op thread "
        "per request, one log line per request written to a file); the load comes from a "
        "separate process on the same machine: keep-alive HTTP/1.1 connections, each "
        "sending one multipart PNG per request to `POST /v1/predict`. The client shares the "
        "CPU cores with the server, so these figures are a floor.",
        "",
        describe("onnxruntime", "fastapi", "uvicorn", "numpy", "pillow", "scipy"),
        f"- model: {model_name(args.model)}; {args.requests} requests per level",
        f"- load average (1 min) of the machine before the run: {args.load_before:.1f}, "
        f"after: {os.getloadavg()[0]:.1f} (above 2 means other jobs shared the 2 cores)",
        "",
        "Latencies are measured by the client. *server ms*: mean time from a request's "
        "arrival to the end of its response inside the server, waiting for a predictor "
        "thread included; *predictor ms*: mean time in `Predictor.predict_image` (decode, "
        "preprocessing, ONNX). Both from the server's own /metrics.",
        "",
        f"Each level ran {args.repeats} times; the table shows the try with the median "
        "requests/s (its latencies) and, in brackets, the slowest and fastest tries; errors "
        "are summed over all tries.",
        "",
        "| workers | image | concurrency | requests/s | p50 ms | p99 ms | errors | server ms "
        "| predictor ms | RSS MB | ready s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['workers']} | {r['image']} | {r['concurrency']} | {r['rps']:.0f} "
            f"({r['rps_min']:.0f}–{r['rps_max']:.0f}) | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['request_ms']:.2f} | "
            f"{r['predictor_ms']:.2f} | {r['rss_mb']:.0f} | {r['ready_s']:.2f} |"
        )
    lines += ["", "### Targets (28x28 image, concurrency 16)", ""]
    for r in runs:
        if r["concurrency"] == 16 and r["image"].startswith("28x28"):
            ok = (
                r["rps"] >= TARGET["rps_at_16"]
                and r["p99_ms"] < TARGET["p99_ms_at_16"]
                and r["errors"] == 0
            )
            lines.append(
                f"- {r['workers']} worker(s): {r['rps']:.0f} req/s (target ≥ 500), p99 "
                f"{r['p99_ms']:.1f} ms (< 50), {r['errors']} errors → "
                f"{'met' if ok else 'NOT met'}; RSS {r['rss_mb']:.0f} MB (< 250) → "
                f"{'met' if r['rss_mb'] < TARGET['rss_mb'] else 'NOT met'}; ready in "
                f"{r['ready_s']:.2f} s (< 2) → "
                f"{'met' if r['ready_s'] < TARGET['ready_s'] else 'NOT met'}"
            )
    lines += ["", "### Where a request's time goes", ""]
    for r in runs:
        if r["concurrency"] == 16:
            per = 1e3 / r["rps"]
            lines.append(
                f"- {r['workers']} worker(s), {r['image']}, 16 clients: one request answered "
                f"every {per:.2f} ms; each spent {r['request_ms']:.1f} ms in the server, "
                f"{r['predictor_ms']:.2f} ms of it in the predictor (wall time, with as many "
                "predictions at once as cores); the rest is waiting for a predictor thread, "
                "HTTP and multipart parsing, the reply, metrics and the log line"
            )
    lines.append("")
    lines += [
        "One image in one thread, no HTTP (ms):",
        "",
        "| image | " + " | ".join(next(iter(stages.values()))) + " |",
        "|---|" + "---:|" * len(next(iter(stages.values()))),
    ]
    for name, st in stages.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in st.values()) + " |")
    lines += ["", END]
    text = DOC.read_text() if DOC.is_file() else "# Serving digit predictions\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + "\n".join(lines) + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    write_text_atomic(DOC, text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
