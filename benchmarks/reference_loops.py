"""Independent plain-PyTorch loops for the tutorial rows that miss their figure.

When our trainer lands below a tutorial's number, the first question is whether the trainer
is at fault. These loops share nothing with digitlab's trainer (only the data loader): each
is the tutorial's program written out in a dozen lines, and prints test accuracy after every
epoch so the spread of a single run's final figure is visible. Results are quoted in
docs/reproduction.md (benchmarks/reproduce_notes.json).

    python benchmarks/reference_loops.py paddle-softmax --seeds 10
    python benchmarks/reference_loops.py keras-fc --seeds 2 [--keras-numerics]

``--keras-numerics`` emulates TensorFlow's Adam (epsilon added to the uncorrected second
moment) and Keras' cross-entropy (probabilities clipped to [1e-7, 1 - 1e-7]).
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.data.dataset import load_split


def flat(split: str, shift: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    d = load_split(split)
    x = (torch.from_numpy(d.images).float().reshape(len(d.images), -1) - shift) / scale
    return x, torch.from_numpy(d.labels).long()


def test_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return float((out.argmax(1) == y).float().mean()) * 100


def paddle_softmax(seed: int) -> list[float]:
    """PaddlePaddle book (fluid): fc(10, softmax), Xavier, Adam 1e-3, batch 64, 5 passes."""
    x, y = flat("train", 127.5, 127.5)
    xt, yt = flat("test", 127.5, 127.5)
    torch.manual_seed(seed)
    model = nn.Linear(784, 10)
    nn.init.xavier_uniform_(model.weight)
    nn.init.zeros_(model.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    accs = []
    for _ in range(5):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        accs.append(test_accuracy(model, xt, yt))
    return accs


def keras_fc(seed: int, keras_numerics: bool) -> list[float]:
    """Keras: 784-1024-512-10, dropout 0.2, he_normal, Adam (eps 1e-7), batch 64, 20 epochs,
    validation_split=0.05 (the last 3,000 training digits are held out)."""
    x, y = flat("train", 127.0, 127.0)
    xt, yt = flat("test", 127.0, 127.0)
    x, y = x[:57000], y[:57000]
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(512, 10),
    )  # fmt: skip
    for layer in model:
        if isinstance(layer, nn.Linear):
            std = math.sqrt(2.0 / layer.in_features) / 0.87962566103423978
            nn.init.trunc_normal_(layer.weight, 0, std, -2 * std, 2 * std)
            nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    accs, step = [], 0
    for _ in range(20):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            step += 1
            if keras_numerics:
                p = F.softmax(model(x[idx]), 1).clamp(1e-7, 1 - 1e-7)
                loss = -p.gather(1, y[idx, None]).log().mean()
                # TF adds epsilon to sqrt(v) before bias correction: torch's eps, rescaled.
                opt.param_groups[0]["eps"] = 1e-7 / math.sqrt(1 - 0.999**step)
            else:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        accs.append(test_accuracy(model, xt, yt))
    return accs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("loop", choices=["paddle-softmax", "keras-fc"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--keras-numerics", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    finals = []
    for seed in range(args.seeds):
        if args.loop == "paddle-softmax":
            accs = paddle_softmax(seed)
        else:
            accs = keras_fc(seed, args.keras_numerics)
        finals.append(accs[-1])
        per_epoch = " ".join(f"{a:.2f}" for a in accs)
        print(f"seed {seed}: final {accs[-1]:.2f}%  best epoch {max(accs):.2f}%  [{per_epoch}]")
    mean = sum(finals) / len(finals)
    sd = math.sqrt(sum((f - mean) ** 2 for f in finals) / max(1, len(finals) - 1))
    print(f"final test accuracy over {len(finals)} seeds: mean {mean:.2f}%, sd {sd:.2f}, "
          f"range {min(finals):.2f}-{max(finals):.2f}%")  # fmt: skip


if __name__ == "__main__":
    main()
