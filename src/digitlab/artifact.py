"""The model artifact: ``model.safetensors`` (weights) + ``model.json`` (everything else).

``model.json`` has one schema, :class:`ModelMeta`, validated whole on load, and one write
path, :func:`save_artifact` for a new model and :func:`update_meta` for a block added later
(calibration's ``rejection``, the line model's ``line``). It records the SHA-256 of the
weights it describes, so a folder whose two files come from different runs (a kill between
replacing them) or whose weights were damaged is refused instead of served. Loading never
unpickles anything: weights come from safetensors, the architecture is rebuilt from the
registry by name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write, read_regular, write_text_atomic
from digitlab.version import __version__

if TYPE_CHECKING:
    from torch import nn

FORMAT = "digitlab-model"
FORMAT_VERSION = 1  # the newest model.json this digitlab reads
DIGIT_CLASSES = list(range(10))
NOT_A_DIGIT = "not-a-digit"
WEIGHTS = "model.safetensors"
META = "model.json"
MAX_META_BYTES = 16 * 2**20  # an ensemble of many members is ~100 kB
BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "model"


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


Finite = Annotated[float, AfterValidator(_finite)]
PositiveFinite = Annotated[float, Field(gt=0), AfterValidator(_finite)]


class _Block(BaseModel):
    """A block of model.json: known fields typed, further figures kept as written."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class Rejection(_Block):
    """How the model says "not a digit": calibrated temperature and a confidence threshold."""

    method: Literal["max-probability", "extra-class"] = "max-probability"
    temperature: PositiveFinite = 1.0
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.5


class LineBlock(_Block):
    """The CTC line recogniser stored beside the model (digitlab.numbers.lines)."""

    file: Literal["line.onnx"] = "line.onnx"


class ModelMeta(_Block):
    """Everything in model.json. ``classes`` is the digits, optionally then "not a digit"."""

    format: Literal["digitlab-model"] = FORMAT
    format_version: Annotated[int, Field(ge=1, le=FORMAT_VERSION)] = FORMAT_VERSION
    digitlab_version: str = __version__
    architecture: Annotated[str, Field(min_length=1, max_length=100)]
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    normalization: tuple[Finite, PositiveFinite]
    classes: list[int | str] = Field(default_factory=lambda: list(DIGIT_CLASSES))
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    data_digests: dict[str, str] = Field(default_factory=dict)
    trained_on: str | None = None
    description: str | None = None
    recipe: dict[str, Any] | None = None
    rejection: Rejection | None = None
    line: LineBlock | None = None

    def model_post_init(self, _context: Any) -> None:
        if self.classes[:10] != DIGIT_CLASSES or len(self.classes) > 11:
            raise ValueError('classes must be the digits 0-9, optionally then "not a digit"')

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def rejection_or_default(self) -> Rejection:
        return self.rejection or Rejection()

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "model.json"
    return f"{where}: {first['msg']}"


def parse_meta(text: str | bytes, name: str = META) -> ModelMeta:
    """A model.json's text validated whole; any fault is one DigitlabError."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DigitlabError(f"{name}: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DigitlabError(f"{name}: not a digitlab model file")
    version = raw.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise DigitlabError(
            f"{name}: format_version {version} is newer than this digitlab reads "
            f"({FORMAT_VERSION}); upgrade digitlab"
        )
    try:
        return ModelMeta.model_validate_json(text)  # JSON mode: strict types, lists as tuples
    except ValidationError as exc:
        raise DigitlabError(f"{name}: {_one_line(exc)}") from None
    except (ValueError, RecursionError) as exc:
        raise DigitlabError(f"{name}: {exc}") from None


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


def find_model(model: str | os.PathLike | None) -> Path:
    """A model folder: the given run/model folder, or the model bundled with digitlab."""
    if model is None:
        if not (BUNDLED_MODEL / META).is_file():
            raise DigitlabError(
                "no bundled model in this installation; pass --model RUN_OR_MODEL "
                "(make one with `make bundle`)"
            )
        return BUNDLED_MODEL
    return resolve_artifact(model)


def _read_bounded(path: Path, limit: int) -> bytes:
    return read_regular(path, limit, what="model file")


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """The artifact's metadata, validated whole."""
    folder = resolve_artifact(path)
    return parse_meta(_read_bounded(folder / META, MAX_META_BYTES), str(folder / META))


def build_model(meta: ModelMeta) -> nn.Module:
    """An untrained model of the artifact's architecture, from the registry."""
    from digitlab.models import create_model

    return create_model(meta.architecture, **meta.model_kwargs)


def save_artifact(out_dir: str | os.PathLike, model: nn.Module, meta: ModelMeta) -> Path:
    """Write weights then metadata (which records the weights' digest), each atomically;
    returns the path of ``model.json``."""
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    digest = hashlib.sha256(blob).hexdigest()
    with atomic_write(out / WEIGHTS) as fh:
        fh.write(blob)
    meta = meta.model_copy(update={"weights_sha256": digest, "digitlab_version": __version__})
    write_text_atomic(out / META, meta.to_json())
    return out / META


def update_meta(folder: str | os.PathLike, **blocks: Any) -> ModelMeta:
    """Add or replace top-level blocks of an existing model.json (validated, atomic)."""
    folder = resolve_artifact(folder)
    meta = read_meta(folder)
    raw = meta.model_dump(mode="json", exclude_none=True)
    raw.update({k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
                for k, v in blocks.items()})  # fmt: skip
    new = parse_meta(json.dumps(raw, allow_nan=False), str(folder / META))
    write_text_atomic(folder / META, new.to_json())
    return new


def weights_digest(folder: Path) -> str:
    return hashlib.sha256(_read_bounded(folder / WEIGHTS, 2**34)).hexdigest()


def load_artifact(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model from the registry and load its weights: (model in eval mode, meta)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = resolve_artifact(path)
    meta = read_meta(folder)
    model = build_model(meta)
    blob = _read_bounded(folder / WEIGHTS, 2**34)
    if meta.weights_sha256 and hashlib.sha256(blob).hexdigest() != meta.weights_sha256:
        raise DigitlabError(
            f"{folder / WEIGHTS}: does not match {META} (its recorded weights_sha256): the "
            "weights were changed or damaged, or the two files come from different saves"
        )
    try:
        state = load(blob)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DigitlabError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from None
    broken = [k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
    if broken:  # a diverged run: every prediction would be NaN
        raise DigitlabError(f"{folder / WEIGHTS}: {broken[0]} holds NaN or infinite values")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch, not the banner
        raise DigitlabError(
            f"{folder / WEIGHTS}: weights do not fit {meta.architecture}: {detail}"
        ) from None
    return model.to(device).eval(), meta
