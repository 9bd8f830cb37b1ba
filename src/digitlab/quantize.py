"""Int8 ONNX graphs by static quantisation, calibrated on MNIST training digits.

ONNX Runtime's quantiser measures each activation's range on a few hundred training digits
(min/max), then stores weights as int8 and runs convolutions and dense layers on 8-bit
integers. The graph still takes raw uint8 pixels and returns float logits, like the fp32
export. Accuracy is never assumed: the bench measures every int8 graph on the MNIST test set.

The default for ONNX Runtime is QOperator with per-channel int8 weights (U8S8: uint8
activations times int8 weights, what VNNI multiplies natively); on the AVX-512 VNNI machine
we measured, the other formats, weight types and scale granularities ran within noise of it
(docs/benchmarks.md). OpenVINO reads QDQ graphs (not QOperator's contrib QGemm) and runs
their quantised parts in int8.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError

CALIBRATION_DIGITS = 1024
CALIBRATION_BATCH = 128

_FORMATS = {"qop": "QOperator", "qdq": "QDQ"}


@dataclass(frozen=True)
class QuantConfig:
    """One static-quantisation variant; :meth:`parse` reads the short names the CLI takes.

    ``qop``/``qdq``: operators with int8 kernels (QLinearConv, QGemm) or float operators
    wrapped in QuantizeLinear/DequantizeLinear pairs that the runtime fuses. ``pc``/``pt``:
    one weight scale per output channel or per tensor. ``s8``/``u8``: int8 or uint8 weights.
    ``rr``: 7-bit weights (reduce_range), for CPUs without VNNI whose 16-bit intermediate
    sums would otherwise saturate. ``fc``: keep the first convolution in float (a one-channel
    5x5 convolution is a K=25 matrix product that int8 kernels handle badly).
    """

    format: str = "qop"
    per_channel: bool = True
    weights: str = "s8"
    reduce_range: bool = False
    float_first_conv: bool = False
    calibration: int = CALIBRATION_DIGITS

    @property
    def name(self) -> str:
        parts = [self.format, "pc" if self.per_channel else "pt", self.weights]
        parts += ["rr"] * self.reduce_range + ["fc"] * self.float_first_conv
        return "-".join(parts)

    @property
    def description(self) -> str:
        text = (
            f"{_FORMATS[self.format]}, {'per-channel' if self.per_channel else 'per-tensor'} "
            f"U8{self.weights.upper()}"
        )
        text += ", 7-bit weights" * self.reduce_range
        text += ", first conv in fp32" * self.float_first_conv
        return f"{text}, calibrated on {self.calibration:,} training digits"

    @classmethod
    def parse(cls, spec: str) -> QuantConfig:
        """``"qdq-pt-s8"`` -> QuantConfig(format="qdq", per_channel=False, weights="s8")."""
        config = cls()
        for token in filter(None, spec.lower().split("-")):
            if token in _FORMATS:
                config = replace(config, format=token)
            elif token in ("pc", "pt"):
                config = replace(config, per_channel=token == "pc")
            elif token in ("s8", "u8"):
                config = replace(config, weights=token)
            elif token == "rr":
                config = replace(config, reduce_range=True)
            elif token == "fc":
                config = replace(config, float_first_conv=True)
            else:
                raise DigitlabError(
                    f"int8 variant {spec!r}: unknown part {token!r}; use parts of "
                    "qop|qdq, pc|pt, s8|u8, rr, fc joined by '-', e.g. qdq-pt-s8"
                )
        return config


DEFAULT_ORT = QuantConfig()  # fastest on ONNX Runtime (docs/benchmarks.md)
DEFAULT_OPENVINO = QuantConfig(format="qdq")  # OpenVINO reads QDQ, not QOperator's QGemm


def calibration_images(n: int = CALIBRATION_DIGITS, seed: int = 0) -> np.ndarray:
    """``n`` training digits drawn at random (uint8, N x 28 x 28): what the ranges are fitted
    on; test digits are kept for measuring accuracy."""
    from digitlab.data.dataset import load_split

    images = load_split("train").images
    pick = np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False)
    return np.ascontiguousarray(images[np.sort(pick)])


def quantize_onnx(
    fp32: bytes, config: QuantConfig = DEFAULT_ORT, images: np.ndarray | None = None
) -> bytes:
    """The int8 version of an fp32 graph (uint8 pixels -> logits), calibrated on ``images``
    (default: :func:`calibration_images`)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if images is None:
        images = calibration_images(config.calibration)

    class Digits(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {"pixels": images[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(images), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    source = onnx.load_from_string(fp32)
    convs = [n.name for n in source.graph.node if n.op_type == "Conv"]
    exclude = convs[:1] if config.float_first_conv else []
    with tempfile.TemporaryDirectory(prefix="digitlab-quant-") as tmp, _quiet():
        raw, pre, out = (Path(tmp) / f for f in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        raw.write_bytes(fp32)
        quant_pre_process(str(raw), str(pre))  # shape inference + fusions the quantiser wants
        quantize_static(
            str(pre),
            str(out),
            Digits(),
            quant_format=QuantFormat.QOperator if config.format == "qop" else QuantFormat.QDQ,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8 if config.weights == "s8" else QuantType.QUInt8,
            nodes_to_exclude=exclude,
        )
        model = onnx.load(str(out))
    props = {p.key: p.value for p in source.metadata_props}
    props["digitlab.int8"] = config.name
    onnx.helper.set_model_props(model, props)
    return model.SerializeToString()


@contextlib.contextmanager
def _quiet():
    """The quantiser logs a warning per tensor it leaves in float (the uint8 input among
    them) through the root logger; none is actionable here."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
