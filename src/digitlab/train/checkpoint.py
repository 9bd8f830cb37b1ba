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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write

if TYPE_CHECKING:
    import torch

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d+)\.safetensors$")


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / CKPT_DIR / f"iter_{iteration:07d}.safetensors"


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / CKPT_DIR
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return max(found)[1] if found else None


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
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise DigitlabError(f"{path}: unreadable checkpoint ({exc})") from None
    return parse_checkpoint(blob, str(path))


def parse_checkpoint(blob: bytes, name: str = "checkpoint") -> dict[str, Any]:
    """:func:`load_checkpoint` from the file's bytes (rank 0 reads them, every worker parses)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        # safetensors layout: u64 little-endian header length, then the JSON header
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(json.loads(blob[8 : 8 + size])["__metadata__"]["digitlab"])
        tensors = load(blob)
    except (SafetensorError, KeyError, ValueError, TypeError) as exc:
        raise DigitlabError(f"{name}: unreadable checkpoint ({exc})") from None
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    state: dict[int, dict[str, Any]] = {}
    for idx, plain in header["optim_plain"].items():
        state[int(idx)] = dict(plain)
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    return {
        "model_state": model_state,
        "optim_state": {"state": state, "param_groups": header["param_groups"]},
        "rng_state": tensors["rng.torch"],
        "info": header["info"],
        "extra": extra,
    }


def prune_partial_files(run_dir: Path) -> None:
    """Remove temp files a killed run left behind (finished files are never touched)."""
    for folder in (run_dir, run_dir / CKPT_DIR):
        if folder.is_dir():
            for p in folder.glob(".*.part"):
                os.unlink(p)
