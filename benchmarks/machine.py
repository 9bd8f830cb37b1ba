"""A description of the machine a benchmark ran on, for the head of each docs/*.md."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from importlib import metadata


def cpu_model() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.readlines()
    except OSError:
        return []


def cpu_flags(
    wanted: tuple[str, ...] = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"),
) -> str:
    for line in _cpuinfo():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return " ".join(f for f in wanted if f in have) or "none of " + ",".join(wanted)
    return "unknown"


def versions(*packages: str) -> str:
    out = []
    for p in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{p} {metadata.version(p)}")
    return ", ".join(out)


def describe(*packages: str) -> str:
    """Markdown lines: date, CPU, cores, SIMD flags, Python and library versions."""
    pkgs = packages or ("torch", "numpy", "pillow")
    return "\n".join(
        [
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- CPU: {cpu_model()} ({os.cpu_count()} cores visible)",
            f"- SIMD flags: {cpu_flags()}",
            f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
            f"- libraries: {versions(*pkgs)}",
        ]
    )


def replace_section(doc: os.PathLike | str, name: str, body: str, title: str = "") -> None:
    """Write ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc``,
    keeping the rest: several benchmark scripts share one docs/*.md, each owning a section.
    The file is replaced atomically (a new file with ``title`` as its first line if missing)."""
    from pathlib import Path

    from digitlab.fileio import write_text_atomic

    path = Path(doc)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.is_file() else (title or f"# {path.stem.title()}") + "\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
