"""Training the line recogniser (:mod:`digitlab.numbers.lines`) with CTC, and shipping it as ONNX.

The lines are numbers written with ``train50k`` digits by the same generator as the
real-inputs benchmark (:func:`digitlab.synth.uploads.realistic_numbers`: paper, photos, canvas
exports, touching digits), rendered to image files and read back exactly as
``predict --number`` reads them (:func:`digitlab.numbers.segment.locate`,
:func:`line_image`). So the line model sees what it will see in use, and never a ``val``
or ``test`` digit: it is checked on lines written with ``val`` digits.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digitlab.numbers.lines import BLANK, LINE_FILE, LINE_HEIGHT, STRIDE

if TYPE_CHECKING:
    from digitlab.recipes import LineRecipe

LINE_CHUNK = 500  # lines per worker task
TOLERANCE = 1e-4  # max |probability difference| between torch and ONNX Runtime


@dataclass
class LineSet:
    """Line images (each (32, W_i) uint8) and the digits each one shows."""

    images: list[np.ndarray]
    texts: list[str]


def make_lines(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    seed: int,
    workers: int | None = None,
    *,
    max_digits: int = 6,
    fonts: int = 0,
    families: tuple[str, ...] = (),
) -> LineSet:
    """``n`` numbers of 2 to ``max_digits`` digits written with ``images``, then ``fonts``
    more in the handwriting fonts ``families`` (digitlab.synth.fonts), read back as line
    images (those where no ink is found are left out); chunks run in ``workers`` processes,
    the result depends on ``seed`` alone."""
    from digitlab.system import map_chunks

    rng = np.random.default_rng(seed)
    tasks = [
        (min(LINE_CHUNK, total - i), int(rng.integers(2**62)), max_digits, fams)
        for total, fams in ((n, ()), (fonts, families))
        for i in range(0, total, LINE_CHUNK)
    ]
    done = map_chunks(_line_chunk, tasks, workers, _hold_digits, (images, labels))
    _WORKER_DIGITS.clear()
    return LineSet([im for d in done for im in d.images], [t for d in done for t in d.texts])


# a worker process's copy of the digits to write with (set by _hold_digits)
_WORKER_DIGITS: list[np.ndarray] = []


def _hold_digits(images: np.ndarray, labels: np.ndarray) -> None:
    _WORKER_DIGITS[:] = [images, labels]


def _line_chunk(n: int, seed: int, max_digits: int, families: tuple[str, ...]) -> LineSet:
    """``n`` lines: numbers of MNIST digits, or in the fonts ``families`` when there are some."""
    from digitlab.inputs import line_input
    from digitlab.numbers.lines import line_image
    from digitlab.numbers.segment import locate
    from digitlab.synth.fonts import font_samples
    from digitlab.synth.uploads import realistic_numbers

    if families:
        samples = font_samples(n, seed, families, lengths=(2, max_digits))
        written = [(s.data, s.text) for s in samples]
    else:
        images, labels = _WORKER_DIGITS
        written = [(d, t) for d, t, _ in realistic_numbers(images, labels, n, seed, 2, max_digits)]
    out = LineSet([], [])
    for data, text in written:
        layout = locate(line_input(data))
        line = line_image(layout) if layout is not None else None
        if line is not None:
            out.images.append(line)
            out.texts.append(text)
    return out


def _batch(
    lines: LineSet, idx: np.ndarray, rng: np.random.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines ``idx`` padded with background to one width, and each one's column count;
    with ``rng``, each moved up to 2 px up or down and the batch stretched 0.85-1.15x."""
    width = max(lines.images[i].shape[1] for i in idx)
    x = np.zeros((len(idx), LINE_HEIGHT, width), np.uint8)
    for k, i in enumerate(idx):
        im = lines.images[i]
        if rng is not None:
            im = np.roll(im, int(rng.integers(-2, 3)), axis=0)
        x[k, :, : im.shape[1]] = im
    columns = torch.tensor([lines.images[i].shape[1] // STRIDE for i in idx])
    batch = torch.from_numpy(x)
    if rng is not None:
        new = round(width * float(rng.uniform(0.85, 1.15)) / STRIDE) * STRIDE
        batch = F.interpolate(batch[:, None].float(), size=(LINE_HEIGHT, new), mode="bilinear")
        batch = batch[:, 0].round().clamp(0, 255).to(torch.uint8)
        columns = (columns * new // width).clamp(1, new // STRIDE)
    return batch, columns


def greedy(log_probs: np.ndarray, columns: int) -> str:
    """The best path's string: the likeliest class per column, repeats merged, blanks dropped."""
    best = log_probs[:columns].argmax(1)
    keep = (best != BLANK) & np.concatenate(([True], best[1:] != best[:-1]))
    return "".join(str(int(c)) for c in best[keep])


def sequence_accuracy(model: nn.Module, lines: LineSet, batch_size: int = 256) -> float:
    """Share of lines whose greedy reading is exactly their digits."""
    model.eval()
    order = np.argsort([im.shape[1] for im in lines.images])
    right = 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, columns = _batch(lines, idx, None)
            lp = model(x).log_softmax(2).numpy()
            right += sum(
                greedy(lp[k], int(columns[k])) == lines.texts[i] for k, i in enumerate(idx)
            )
    return right / max(1, len(lines.texts))


def train_line(
    folder: str | Path, recipe: LineRecipe, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train the line model of ``recipe`` (the ``line`` recipe by default: every setting has
    its home there) and write ``folder/line.onnx`` and a ``line`` block in its model.json
    (what it trained on and its val sequence accuracy); returns the block."""
    from digitlab.artifact import resolve_artifact, update_meta
    from digitlab.data.dataset import load_split
    from digitlab.fileio import write_bytes_atomic
    from digitlab.models import create_model
    from digitlab.synth.fonts import training_fonts

    folder = resolve_artifact(folder)
    started = time.perf_counter()
    seed, lines, epochs = recipe.seed, recipe.data.lines, recipe.train.epochs
    batch_size, lr = recipe.data.batch_size, recipe.solver.lr
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = load_split(recipe.data.train_split)
    val = load_split(recipe.data.val_split)
    longest, fonts = recipe.data.max_digits, recipe.data.font_lines
    families = training_fonts(fonts, log)
    fonts = fonts if families else 0
    data = make_lines(train.images, train.labels, lines, 1000 + seed, max_digits=longest,
                      fonts=fonts, families=families)  # fmt: skip
    held = make_lines(val.images, val.labels, recipe.data.val_lines(), 2000 + seed,
                      max_digits=longest)  # fmt: skip
    n_fonts = max(1, int(fonts * recipe.data.val_fraction)) if fonts else 0
    held_fonts = make_lines(val.images, val.labels, 0, 3000 + seed, max_digits=longest,
                            fonts=n_fonts, families=families)  # fmt: skip
    log(f"{len(data.texts)} training lines ({fonts} in fonts), {len(held.texts)} val lines, "
        f"{len(held_fonts.texts)} val lines in fonts")  # fmt: skip
    model = create_model(recipe.model.name, **recipe.model.options)
    steps_per_epoch = max(1, len(data.texts) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.solver.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=epochs * steps_per_epoch, pct_start=recipe.schedule.pct_start
    )
    widths = np.array([im.shape[1] for im in data.images])
    for epoch in range(epochs):
        model.train()
        # batches of similar widths, so little of each is padding
        order = np.argsort(widths + rng.uniform(0, 24, len(widths)))
        starts = range(0, steps_per_epoch * batch_size, batch_size)
        batches = [order[i : i + batch_size] for i in starts]
        rng.shuffle(batches)
        total = 0.0
        for idx in batches:
            x, columns = _batch(data, idx, rng)
            targets = torch.tensor([int(c) for i in idx for c in data.texts[i]])
            lengths = torch.tensor([len(data.texts[i]) for i in idx])
            lp = model(x).log_softmax(2).transpose(0, 1)  # (T, N, C)
            loss = F.ctc_loss(lp, targets, columns, lengths, blank=BLANK, zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = sequence_accuracy(model, held)
        loss_mean = total / len(batches)
        log(f"epoch {epoch + 1}/{epochs}: CTC loss {loss_mean:.4f}, val lines read {acc:.2%}")
    model = shippable(model)
    acc = sequence_accuracy(model, held)
    font_acc = sequence_accuracy(model, held_fonts) if held_fonts.texts else None
    log(f"float16 weights: val lines read {acc:.2%}"
        + (f", in fonts {font_acc:.2%}" if font_acc is not None else ""))  # fmt: skip
    onnx_bytes = export_line(model, held)
    write_bytes_atomic(folder / LINE_FILE, onnx_bytes)
    block = {
        "file": LINE_FILE,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_on": f"{len(data.texts)} numbers of 2-{longest} digits, {fonts} of them in "
        f"{len(families)} handwriting fonts, the rest of {recipe.data.train_split} digits "
        f"(seed {1000 + seed})",
        "recipe": recipe.model_dump(mode="json"),
        "epochs": epochs,
        "val_lines": len(held.texts),
        "val_sequence_accuracy": round(acc, 6),
        "val_font_lines": len(held_fonts.texts),
        "val_font_sequence_accuracy": None if font_acc is None else round(font_acc, 6),
        "seconds": round(time.perf_counter() - started, 1),
    }
    update_meta(folder, line=block)
    return block


def shippable(model: nn.Module) -> nn.Module:
    """What ``line.onnx`` holds: a copy in eval mode with each BatchNorm folded into the
    convolution before it and every weight rounded to float16, so the file is half the size
    (the bundled model must stay under 2 MB) and torch and ONNX Runtime compute the same."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    for seq in (m.features, m.columns):
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv1d | nn.Conv2d) and isinstance(
                seq[i + 1], nn.BatchNorm1d | nn.BatchNorm2d
            ):
                seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.half().float())
    return m


def export_line(model: nn.Module, check: LineSet) -> bytes:
    """The model (:func:`shippable`) as ONNX with a free line width, its weights stored as
    float16, checked against torch on ``check``'s lines."""
    import onnx

    from digitlab.errors import DigitlabError
    from digitlab.export import OPSET
    from digitlab.runtime import ort_session

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.zeros(1, LINE_HEIGHT, 64, dtype=torch.uint8),),
            buf,
            input_names=["line"],
            output_names=["logits"],
            dynamic_axes={"line": {0: "batch", 2: "width"}, "logits": {0: "batch", 1: "columns"}},
            opset_version=OPSET,
            dynamo=False,
        )
    proto = _half_weights(onnx.load_from_string(buf.getvalue()))
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    session = ort_session(data, threads=0)
    worst = 0.0
    with torch.no_grad():
        for im in check.images[:64]:
            want = model(torch.from_numpy(im)[None]).softmax(2).numpy()
            got = torch.from_numpy(session.run(None, {"line": im[None]})[0]).softmax(2).numpy()
            worst = max(worst, float(np.abs(want - got).max()))
            if greedy(want[0], len(want[0])) != greedy(got[0], len(got[0])):
                raise DigitlabError("the ONNX line model reads a check line otherwise than torch")
    if worst > TOLERANCE:
        raise DigitlabError(
            f"the ONNX line model's probabilities differ from torch's by {worst:.2e}"
        )
    return data


def _half_weights(proto: Any) -> Any:
    """The graph with its float weights stored as float16 and cast back to float32 on load
    (exact for weights :func:`shippable` has rounded)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts = []
    for init in graph.initializer:
        weights = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or weights.size < 64:
            continue  # small tensors (shapes, scalars) stay as they are
        name = init.name
        init.CopyFrom(numpy_helper.from_array(weights.astype(np.float16), name + "_f16"))
        casts.append(helper.make_node("Cast", [name + "_f16"], [name], to=TensorProto.FLOAT))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return onnx.shape_inference.infer_shapes(proto)
