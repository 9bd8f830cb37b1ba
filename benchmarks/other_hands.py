"""How a model reads hands MNIST never saw. Writes docs/other-hands.md and a picture of failures.

    python benchmarks/other_hands.py [--model RUN_OR_MODEL] [--digits 1000] [--numbers 300]
                                     [--low-res 500] [--non-digits 400]

MNIST holds about 500 writers of one place and era. The inputs here are drawn by
digitlab.synth.fonts in the *held-out* handwriting families (HELD_OUT_FAMILIES: never trained
on), with pens from hairline to marker, bleed, slant, wobble, touching neighbours, paper,
light and JPEG, and read by ``predict`` as users' files are. Targets of the issue: single
digits >= 99.0%, numbers of 2-10 digits >= 97% exact, low-resolution digits (8-16 px,
enlarged) >= 97%, each with <= 1% of real digits (or numbers) wrongly rejected, and
non-digits >= 98% rejected: here letters the training never shows, written in the held-out
hands (``font_non_digits``), beside the shapes and letters of benchmarks/real_inputs.py.
Needs the fonts: ``make fonts``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402
from real_inputs import number_failure  # noqa: E402

SEEDS = {"digits": 20261201, "numbers": 1202, "low_res": 1203, "non_digits": 1204}
PEN_KIND = {"hairline": "thin", "thin": "thin", "regular": "regular", "bold": "bold",
            "marker": "bold"}  # fmt: skip
FAILURES_PNG = "other-hands-failures.png"


def tally(rows: list[tuple[str, bool, bool]]) -> dict[str, tuple[int, int, int]]:
    """(group, right, rejected) rows -> group: (right, rejected, count), groups in order."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for group, ok, rejected in rows:
        out[group][0] += ok
        out[group][1] += rejected
        out[group][2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def table(title: str, rows: list[tuple[str, bool, bool]], sort: bool = False) -> list[str]:
    counts = tally(rows)
    keys = sorted(counts) if sort else list(counts)
    lines = [f"| {title} | right | wrongly rejected |", "| --- | --- | --- |"]
    for k in keys:
        ok, rej, n = counts[k]
        lines.append(f"| {k} | {ok}/{n} ({ok / n:.1%}) | {rej} ({rej / n:.1%}) |")
    return lines


def misread_table(misreads: list[tuple[str, str, str, str]], top: int = 12) -> list[str]:
    """The ``top`` commonest (where, true, read) of ``misreads``, with their main family."""
    counts = Counter((where, true, read) for where, true, read, _ in misreads)
    lines = ["| input | true -> read | count | most from |", "| --- | --- | --- | --- |"]
    for (where, true, read), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        family, k = Counter(
            f for w, t, r, f in misreads if (w, t, r) == (where, true, read)
        ).most_common(1)[0]
        lines.append(f"| {where} | {true} -> {read} | {n} | {family} ({k}) |")
    return lines


def rejected_table(title: str, rows: list[tuple[str, bool, bool]]) -> list[str]:
    """Non-digits: (group, rejected, _) rows as a table of the share rejected."""
    lines = [f"| {title} | rejected |", "| --- | --- |"]
    for k, (rej, _, n) in sorted(tally(rows).items()):
        lines.append(f"| {k} | {rej}/{n} ({rej / n:.1%}) |")
    return lines


def thumbnail(data: bytes, side: int) -> object:
    """The upload as a person sees it (transparent canvas on white), fitted in ``side``."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        page = Image.new("RGBA", img.size, (255, 255, 255, 255))
        page.alpha_composite(img)
        img = page
    img = img.convert("RGB")
    img.thumbnail((side * 3, side))
    return img


def failure_picture(groups: dict[str, list[tuple[bytes, str, str]]], path: Path) -> None:
    """One row per kind of input: up to 8 failures, each captioned 'true -> read'."""
    from PIL import Image, ImageDraw, ImageFont

    cell_w, cell_h, label_w, per_row = 200, 96, 110, 8
    font = ImageFont.load_default(size=13)
    rows = [(k, v[:per_row]) for k, v in groups.items()]
    sheet = Image.new("RGB", (label_w + cell_w * per_row, cell_h * max(1, len(rows))), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (kind, fails) in enumerate(rows):
        y = r * cell_h
        draw.text((6, y + cell_h // 2), kind, fill="black", font=font, anchor="lm")
        for c, (data, truth, read) in enumerate(fails):
            x = label_w + c * cell_w
            img = thumbnail(data, cell_h - 24)
            img.thumbnail((cell_w - 8, cell_h - 24))
            sheet.paste(img, (x + 4, y + 4))
            draw.text((x + 4, y + cell_h - 18), f"{truth} -> {read}", fill="crimson", font=font)
        draw.line((0, y + cell_h - 1, sheet.width, y + cell_h - 1), fill="lightgrey")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sheet.quantize(64).save(buf, "PNG", optimize=True)  # 64 colours: a third of the bytes
    from digitlab.fileio import write_bytes_atomic

    write_bytes_atomic(path, buf.getvalue())


def trained_on(pred: object) -> str:
    """What the model and its line model learnt from, as their model.json says."""
    meta = pred.meta  # type: ignore[attr-defined]
    data = (meta.recipe or {}).get("data", {})
    fonts_n = int(data.get("font_digits", 0))
    text = f"The digit model trained on `{meta.trained_on}`"
    text += "." if fonts_n else ": MNIST's writers only, no handwriting fonts."
    if meta.line is not None:
        text += f" Its line model trained on {getattr(meta.line, 'trained_on', '?')}."
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run or model folder [bundled model]")
    ap.add_argument("--digits", type=int, default=1000, help="single-digit uploads [1000]")
    ap.add_argument("--numbers", type=int, default=300, help="numbers of 2-10 digits [300]")
    ap.add_argument("--low-res", type=int, default=500, help="low-resolution digits [500]")
    ap.add_argument("--non-digits", type=int, default=400, help="letters, one or two [400]")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "other-hands.md", help="doc")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # one image at a time: a second thread only adds contention

    from digitlab.fileio import write_text_atomic
    from digitlab.predict import Predictor
    from digitlab.synth import fonts
    from digitlab.synth.uploads import LETTERS

    held = fonts.HELD_OUT_FAMILIES
    pred = Predictor(args.model)
    t0 = time.perf_counter()
    fails: dict[str, list[tuple[bytes, str, str]]] = defaultdict(list)

    def said(digit: int | None) -> str:
        return "rejected" if digit is None else str(digit)

    # (where, true, read, family) of each digit read wrongly: what the model takes for what
    misreads: list[tuple[str, str, str, str]] = []
    singles = fonts.font_samples(args.digits, SEEDS["digits"], held)
    by_family, by_pen, by_page = [], [], []
    for s in singles:
        r = pred.predict_image(s.data)
        ok, rej = r["digit"] == int(s.text), not r["is_digit"]
        by_family.append((s.family, ok, rej))
        by_pen.append((s.pen, ok, rej))
        by_page.append((s.page, ok, rej))
        if not ok:
            fails[f"digit, {PEN_KIND[s.pen]} pen"].append((s.data, s.text, said(r["digit"])))
            misreads.append(("single digit", s.text, said(r["digit"]), s.family))
    acc = np.mean([ok for _, ok, _ in by_family])
    rejected = np.mean([rej for _, _, rej in by_family])

    numbers = fonts.font_samples(args.numbers, SEEDS["numbers"], held, lengths=(2, 10))
    by_len, by_kind, num_fails = [], [], []
    for s in numbers:
        read = pred.predict_image(s.data, number=True)["number"]
        ok, rej = read == s.text, read is None
        kind = "touching" if s.touching else PEN_KIND[s.pen]
        by_len.append((f"{len(s.text):2d} digits", ok, rej))
        by_kind.append((kind, ok, rej))
        if not ok:
            num_fails.append(number_failure(s.text, read))
            if read is not None and len(read) == len(s.text):
                misreads += [
                    ("digit of a number", a, b, s.family)
                    for a, b in zip(s.text, read, strict=True)
                    if a != b
                ]
            fails[f"number, {kind}"].append((s.data, s.text, read or "not read"))
    num_ok = [ok for _, ok, _ in by_len]
    num_acc, num_rej = np.mean(num_ok), np.mean([rej for _, _, rej in by_len])
    short = [ok for s, ok in zip(numbers, num_ok, strict=True) if len(s.text) <= 6]
    long = [ok for s, ok in zip(numbers, num_ok, strict=True) if len(s.text) > 6]

    low = fonts.font_samples(args.low_res, SEEDS["low_res"], held, style=fonts.LOW_RES)
    low_rows, low_family = [], []
    for s in low:
        r = pred.predict_image(s.data)
        ok, rej = r["digit"] == int(s.text), not r["is_digit"]
        band = "8-10" if s.low_res <= 10 else "11-13" if s.low_res <= 13 else "14-16"
        low_rows.append((f"{band} px, {s.upscale}", ok, rej))
        low_family.append((s.family, ok, rej))
        if not ok:
            fails["low-res digit"].append((s.data, s.text, said(r["digit"])))
            misreads.append(("low-res digit", s.text, said(r["digit"]), s.family))
    low_acc = np.mean([ok for _, ok, _ in low_rows])
    low_rej = np.mean([rej for _, _, rej in low_rows])

    others = fonts.font_non_digits(
        args.non_digits, SEEDS["non_digits"], held, letters=LETTERS, shapes=()
    )
    non_rows, non_family = [], []
    for s in others:
        r = pred.predict_image(s.data)
        non_rows.append(
            ("one letter" if len(s.text) == 1 else "two letters", not r["is_digit"], False)
        )
        non_family.append((s.family, not r["is_digit"], False))
        if r["is_digit"]:
            fails["non-digit read as a digit"].append((s.data, s.text, said(r["digit"])))
    non_rej = np.mean([ok for _, ok, _ in non_rows])
    seconds = time.perf_counter() - t0

    picture = args.out.parent / FAILURES_PNG
    failure_picture(dict(sorted(fails.items())), picture)

    shown = pred.folder.relative_to(ROOT) if pred.folder.is_relative_to(ROOT) else pred.folder
    target = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    families = ", ".join(f"`{f}` {fonts.FONTS[f]}" for f in held)
    lines = [
        "# Other people's handwriting",
        "",
        f"Written by `benchmarks/other_hands.py` for the model in `{shown}`.",
        "MNIST holds about 500 writers of one place and era; these inputs are digits and",
        "numbers in handwriting fonts (`digitlab.synth.fonts`, each made from one person's",
        "hand, installed pinned from npm's `@fontsource` packages by `make fonts`) of the",
        f"**held-out families** only, never trained on: {families}.",
        "Each upload gets a pen from hairline to marker, ink bleed and uneven pressure, a",
        "slant of -10 to +20 degrees, elastic wobble, uneven size and baseline between",
        "neighbours (touching in 30% of numbers), and the paper, light, noise and JPEG of",
        "`digitlab.synth.uploads`; `predict` reads the encoded file as it reads a user's.",
        "Low-resolution digits are drawn 8-16 px tall and enlarged 3-20x, `blocky`",
        "(nearest) or `blurred` (bicubic).",
        "",
        describe("torch", "numpy", "pillow", "scipy"),
        "",
        "| measure | result | target | |",
        "| --- | --- | --- | --- |",
        f"| single digits right ({len(singles)}) | {acc:.2%} | >= 99.0% | {target(acc >= 0.99)} |",
        f"| real digits wrongly rejected | {rejected:.2%} | <= 1% | {target(rejected <= 0.01)} |",
        f"| numbers of 2-10 digits exact ({len(numbers)}) | {num_acc:.2%} | >= 97% | "
        f"{target(num_acc >= 0.97)} |",
        f"| numbers not read at all (wrongly rejected) | {num_rej:.2%} | <= 1% | "
        f"{target(num_rej <= 0.01)} |",
        f"| of them 2-6 digits exact ({len(short)}) | {np.mean(short):.2%} | | |",
        f"| of them 7-10 digits exact ({len(long)}) | {np.mean(long):.2%} | | |",
        f"| low-resolution digits right ({len(low)}) | {low_acc:.2%} | >= 97% | "
        f"{target(low_acc >= 0.97)} |",
        f"| low-resolution digits wrongly rejected | {low_rej:.2%} | <= 1% | "
        f"{target(low_rej <= 0.01)} |",
        f"| letters in these hands rejected ({len(others)}) | {non_rej:.2%} | >= 98% | "
        f"{target(non_rej >= 0.98)} |",
        "",
        f"Rendering and reading took {seconds:.0f} s on one thread. {trained_on(pred)}",
        "Held-out families are only ever measured here, never trained on or tuned on.",
        "",
        f"Failures, up to 8 per kind ([{FAILURES_PNG}]({FAILURES_PNG})):",
        "",
        f"![failures]({FAILURES_PNG})",
        "",
        "## What is read as what",
        "",
        "The commonest wrong readings of single digits, low-resolution digits, and digits of",
        "numbers read with the right count of digits, and the family most of them come from.",
        "",
        *misread_table(misreads),
        "",
        "## Single digits",
        "",
        *table("family", by_family),
        "",
        *table("pen", by_pen),
        "",
        *table("page", by_page),
        "",
        "## Numbers",
        "",
        *table("length", by_len, sort=True),
        "",
        *table("kind", by_kind, sort=True),
        "",
        "Kinds: `touching` has two neighbours joined (any pen); otherwise `thin` is a",
        "hairline or thin pen, `bold` a bold pen or a marker.",
        "",
        "| numbers not read exactly | count |",
        "| --- | --- |",
        *(
            f"| {why} | {num_fails.count(why)} |"
            for why in sorted(set(num_fails), key=lambda w: (-num_fails.count(w), w))
        ),
        "",
        "## Low-resolution digits",
        "",
        *table("digit height, enlarged", low_rows, sort=True),
        "",
        *table("family", low_family),
        "",
        "## Letters in these hands",
        "",
        "One or two of the letters the training never shows (`digitlab.synth.uploads.LETTERS`:",
        f"{LETTERS}) in the held-out fonts, with the same pens and pages as the digits, and the",
        '"right" column is the share rejected. Shapes are measured in docs/real-inputs.md.',
        "",
        *table("letters", non_rows, sort=True),
        "",
        *table("family", non_family),
    ]
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
