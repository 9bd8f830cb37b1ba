"""The development check for other people's handwriting: what a change is chosen on.

    python benchmarks/dev_hands.py [MODEL ...]

Only development inputs, never the held-out font families or the MNIST test digits:
synthetic non-digits and uploads made from ``val`` digits (digitlab.synth.uploads), and
digits, 8-16 px digits, letters and shapes and numbers in the *training* font families,
all with seeds of their own (docs/other-hands-training.md reads them). Prints one markdown
table, a column per model (default: the bundled one). Needs the fonts: ``make fonts``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np


def measure(model: str | None) -> dict[str, str]:
    from digitlab.data.dataset import load_split
    from digitlab.predict import Predictor
    from digitlab.synth import fonts
    from digitlab.synth import uploads as synth

    pred = Predictor(model)
    val = load_split("val")
    fams = fonts.TRAIN_FAMILIES
    out: dict[str, str] = {}

    def digits(name: str, samples: list[tuple[bytes, int]]) -> None:
        r = [pred.predict_image(d) for d, _ in samples]
        right = np.mean([x["digit"] == label for x, (_, label) in zip(r, samples, strict=True)])
        rejected = np.mean([not x["is_digit"] for x in r])
        out[f"{name} right, wrongly rejected ({len(r)})"] = f"{right:.1%}, {rejected:.1%}"

    negs = synth.non_digits(1000, 7)
    kept = [not pred.predict_image(d)["is_digit"] for d, _ in negs]
    out[f"synthetic non-digits rejected ({len(negs)})"] = f"{np.mean(kept):.1%}"
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for (_, kind), k in zip(negs, kept, strict=True):
        by_kind[kind].append(k)
    for kind in ("circle", "triangle", "lines", "scribble", "letter"):
        out[f"  of them {kind}"] = f"{np.mean(by_kind[kind]):.0%}"
    as_number = [pred.predict_image(d, number=True)["number"] is not None for d, _ in negs[:300]]
    out["non-digits read as a number with --number (300)"] = f"{np.mean(as_number):.1%}"
    ups = synth.realistic_single(val.images, val.labels, 1000, 555)
    digits("val uploads", [(d, label) for d, label, _ in ups])
    digits(
        "training-font digits", [(s.data, int(s.text)) for s in fonts.font_samples(600, 31, fams)]
    )
    low = fonts.font_samples(300, 32, fams, style=fonts.LOW_RES)
    digits("training-font 8-16 px digits", [(s.data, int(s.text)) for s in low])
    others = fonts.font_non_digits(400, 33, fams)
    kept = [not pred.predict_image(s.data)["is_digit"] for s in others]
    out[f"training-font letters and shapes rejected ({len(others)})"] = f"{np.mean(kept):.1%}"
    nums = synth.realistic_numbers(val.images, val.labels, 150, 4242)
    ok = [pred.predict_image(d, number=True)["number"] == text for d, text, _ in nums]
    out[f"numbers from val digits exact ({len(nums)})"] = f"{np.mean(ok):.1%}"
    font_nums = fonts.font_samples(150, 777, fams, lengths=(2, 10))
    ok = [pred.predict_image(s.data, number=True)["number"] == s.text for s in font_nums]
    out[f"numbers of 2-10 digits in training fonts exact ({len(font_nums)})"] = f"{np.mean(ok):.1%}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="run or model folders [the bundled model]")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    models = args.models or [None]
    columns = [measure(m) for m in models]
    names = [m or "bundled" for m in models]
    print(f"| development measure | {' | '.join(names)} |")
    print(f"| --- |{' --- |' * len(names)}")
    for key in columns[0]:
        print(f"| {key} | {' | '.join(c[key] for c in columns)} |")


if __name__ == "__main__":
    main()
