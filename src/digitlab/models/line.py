"""The line recogniser's network, registered like every other model (``line-ctc``).

It reads a whole written number at once (digitlab.numbers.lines runs it as ONNX); it is
trained with CTC by ``digitlab train-line`` from the ``line`` recipe.
"""

from __future__ import annotations

import torch
from torch import nn

from digitlab.models.registry import MNIST_01, register_model

CLASSES = 11  # ten digits and CTC's blank (digitlab.numbers.lines.BLANK = 10)


class LineNet(nn.Module):
    """Line (N, 32, W) uint8 -> logits (N, W/4, 11): four conv blocks bring the height to 2 and
    the width to W/4, then two 1-D convolutions along the line (each column sees about 42 px,
    a digit and its neighbours' edges) score ten digits and CTC's blank. 230k parameters."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int]) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(pool),
            ]

        self.features = nn.Sequential(
            *block(1, 32, (2, 2)), *block(32, 64, (2, 2)),
            *block(64, 96, (2, 1)), *block(96, 64, (2, 1)),
        )  # fmt: skip
        self.columns = nn.Sequential(
            nn.Conv1d(128, 128, 3, padding=1, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv1d(128, 128, 3, padding=1, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Conv1d(128, CLASSES, 1),
        )

    def forward(self, line: torch.Tensor) -> torch.Tensor:
        x = line.unsqueeze(1).float() / 255.0
        f = self.features(x).flatten(1, 2)  # (N, 64*2, W/4)
        return self.columns(f).transpose(1, 2)


@register_model(
    "line-ctc",
    normalization=MNIST_01,
    description="CTC line recogniser: a whole number's line (32 px high) to digits",
    zoo=False,
)
def line_ctc() -> LineNet:
    return LineNet()
