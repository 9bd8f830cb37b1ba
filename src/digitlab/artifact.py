"""The model artifact: ``model.safetensors`` (weights) + ``model.json`` (everything else).

Loading never unpickles anything: weights come from safetensors, the architecture is rebuilt
from the registry by name, and the rest is plain JSON.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab import __version__
from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write, write_text_atomic

if TYPE_CHECKING:
    from torch import nn

FORMAT = "digitlab-model"
FORMAT_VERSION = 1  # the newest model.json this digitlab reads
DIGIT_CLASSES = list(range(10))
WEIGHTS = "model.safetensors"
META = "model.json"


def save_artifact(out_dir: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights then metadata, each atomically; returns the path of ``model.json``."""
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(out / WEIGHTS) as fh:
        fh.write(save(state))
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "digitlab_version": __version__}
    full.update(meta)
    write_text_atomic(out / META, json.dumps(full, indent=2) + "\n")
    return out / META


def resolve_artifact(path: str | os.PathLike) -> Path:
    """The folder holding model.json for a run folder, a model folder or either file."""
    p = Path(path)
    if p.is_file() and p.name in (META, WEIGHTS):
        p = p.parent
    if not p.exists():
        raise DigitlabError(f"{path}: no such model or run folder")
    if not (p / META).is_file():
        raise DigitlabError(f"{path}: no {META} here; pass a run folder or a model folder")
    if not (p / WEIGHTS).is_file():
        raise DigitlabError(f"{path}: {WEIGHTS} is missing beside {META}")
    return p


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The artifact's metadata, validated enough to rebuild the model."""
    folder = resolve_artifact(path)
    try:
        meta = json.loads((folder / META).read_text())
    except ValueError as exc:
        raise DigitlabError(f"{folder / META}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DigitlabError(f"{folder / META}: not a digitlab model file")
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise DigitlabError(
            f"{folder / META}: format_version {version!r} is newer than this digitlab reads "
            f"({FORMAT_VERSION}); upgrade digitlab"
        )
    for key in ("architecture", "normalization"):
        if key not in meta:
            raise DigitlabError(f"{folder / META}: missing field {key!r}")
    classes = meta.get("classes", DIGIT_CLASSES)
    if not isinstance(classes, list) or classes[:10] != DIGIT_CLASSES or len(classes) > 11:
        raise DigitlabError(
            f"{folder / META}: classes must be the digits 0-9, optionally then one "
            '"not a digit" class'
        )
    norm = meta["normalization"]
    if not (
        isinstance(norm, list)
        and len(norm) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in norm)
        and all(math.isfinite(v) for v in norm)
        and norm[1] > 0
    ):
        raise DigitlabError(
            f"{folder / META}: normalization must be [shift, scale] with a finite scale > 0"
        )
    return meta


def build_model(meta: dict[str, Any]) -> nn.Module:
    """An untrained model of the artifact's architecture: a zoo model or an ensemble."""
    from digitlab.ensemble import ARCHITECTURE, build_ensemble
    from digitlab.models import create_model

    kwargs = meta.get("model_kwargs", {})
    if meta["architecture"] == ARCHITECTURE:
        try:
            return build_ensemble(kwargs["members"], kwargs.get("shifts"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DigitlabError(f"ensemble description is malformed ({exc!r})") from None
    return create_model(meta["architecture"], **kwargs)


def load_artifact(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from the registry and load its weights: (model in eval mode, meta)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_artifact(path)
    meta = read_meta(folder)
    model = build_model(meta)
    try:
        state = load_file(str(folder / WEIGHTS), device=device)
    except (SafetensorError, OSError) as exc:
        raise DigitlabError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from None
    broken = [k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
    if broken:  # a diverged run: every prediction would be NaN
        raise DigitlabError(f"{folder / WEIGHTS}: {broken[0]} holds NaN or infinite values")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch, not the banner
        arch = meta["architecture"]
        raise DigitlabError(f"{folder / WEIGHTS}: weights do not fit {arch}: {detail}") from None
    return model.to(device).eval(), meta
