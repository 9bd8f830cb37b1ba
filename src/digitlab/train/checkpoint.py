"""Training checkpoints as one safetensors file each: tensors plus a JSON header.

Model weights, optimizer buffers and the RNG state are tensors; the iteration, the
optimizer's param groups and the best-so-far bookkeeping are JSON in the file's metadata.
Nothing is pickled, and each file is written atomically, so a SIGKILL at any moment leaves
the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write, read_regular

if TYPE_CHECKING:
    import torch

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d+)\.safetensors$")
# The largest registered model's checkpoint (weights, optimizer slots, best copy) is a few
# MB; 2 GiB leaves room for wide custom options and still bounds what a resume reads.
MAX_CHECKPOINT_BYTES = 2 * 2**30
_INFO_KEYS = ("iteration", "elapsed", "best_value", "best_iter", "stale")


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / CKPT_DIR / f"iter_{iteration:07d}.safetensors"


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    folder = run_dir / CKPT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints_newest_first(run_dir)
    return found[0] if found else None


@dataclass
class ResumePoint:
    """The newest checkpoint that reads and parses, and why each newer one was skipped."""

    path: Path
    blob: bytes
    checkpoint: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


def find_resume_point(run_dir: Path) -> ResumePoint | None:
    """The checkpoint a resume continues from; None when the run has none.

    A newer checkpoint that cannot be read (0 bytes after a full disk, not a regular file,
    not digitlab's) is skipped in favour of an older one that verifies; when none verifies
    this refuses, so a damaged file never costs the run its history.
    """
    found = checkpoints_newest_first(run_dir)
    skipped = []
    for path in found:
        try:
            blob = read_checkpoint_bytes(path)
            return ResumePoint(path, blob, parse_checkpoint(blob, str(path)), skipped)
        except DigitlabError as exc:
            skipped.append(str(exc))
    if not found:
        return None
    raise DigitlabError(
        f"{run_dir}: none of its {len(found)} checkpoints can be read ({skipped[0]}); "
        f"nothing was changed: repair or remove {run_dir / CKPT_DIR} to train from the start"
    )


def save_checkpoint(
    path: Path,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    rng_state: torch.Tensor,
    info: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write one checkpoint atomically. ``info`` must be JSON-able."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model_state.items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, slots in optim_state["state"].items():
        plain_state[str(idx)] = {}
        for name, value in slots.items():
            if hasattr(value, "detach"):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain_state[str(idx)][name] = value
    tensors["rng.torch"] = rng_state.cpu().contiguous()
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    header = {
        "info": info,
        "param_groups": optim_state["param_groups"],
        "optim_plain": plain_state,
    }
    blob = save(tensors, metadata={"digitlab": json.dumps(header)})
    with atomic_write(path) as fh:
        fh.write(blob)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The parts of a checkpoint: model_state, optim_state, rng_state, info, extra."""
    return parse_checkpoint(read_checkpoint_bytes(Path(path)), str(path))


def read_checkpoint_bytes(path: Path, limit: int = MAX_CHECKPOINT_BYTES) -> bytes:
    """The bytes of a checkpoint file: a regular file of at most ``limit`` bytes (a FIFO
    would block the resume forever and /dev/zero would fill the memory)."""
    return read_regular(path, limit, what="checkpoint")


def parse_checkpoint(blob: bytes, name: str = "checkpoint") -> dict[str, Any]:
    """:func:`load_checkpoint` from the file's bytes (rank 0 reads them, every worker parses)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not blob:
        raise DigitlabError(f"{name}: empty file (0 bytes), not a checkpoint")
    try:
        tensors = load(blob)
        # safetensors layout: u64 little-endian header length, then the JSON header
        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8 : 8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, TypeError, AttributeError) as exc:
        raise DigitlabError(f"{name}: unreadable checkpoint ({exc})") from None
    header = _digitlab_header(meta.get("digitlab"))
    if header is None or "rng.torch" not in tensors:
        raise DigitlabError(f"{name}: a safetensors file, but not a digitlab checkpoint")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    state: dict[int, dict[str, Any]] = {}
    try:
        for idx, plain in header["optim_plain"].items():
            state[int(idx)] = dict(plain)
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, slot = k.split(".", 2)
                state.setdefault(int(idx), {})[slot] = v
    except (ValueError, TypeError) as exc:
        raise DigitlabError(f"{name}: unreadable optimizer state in checkpoint ({exc})") from None
    return {
        "model_state": model_state,
        "optim_state": {"state": state, "param_groups": header["param_groups"]},
        "rng_state": tensors["rng.torch"],
        "info": header["info"],
        "extra": extra,
    }


def _digitlab_header(text: Any) -> dict[str, Any] | None:
    """The JSON header :func:`save_checkpoint` writes, or None when it is not one."""
    try:
        header = json.loads(text)
    except (TypeError, ValueError):
        return None
    ok = (
        isinstance(header, dict)
        and isinstance(header.get("info"), dict)
        and all(k in header["info"] for k in _INFO_KEYS)
        and isinstance(header.get("param_groups"), list)
        and isinstance(header.get("optim_plain"), dict)
    )
    return header if ok else None


def prune_partial_files(run_dir: Path) -> None:
    """Remove temp files a killed run left behind (finished files are never touched)."""
    for folder in (run_dir, run_dir / CKPT_DIR):
        if folder.is_dir():
            for p in folder.glob(".*.part"):
                os.unlink(p)
