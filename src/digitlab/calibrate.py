"""Confidence you can believe: temperature scaling and expected calibration error.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T fitted on held-out
data by minimising the negative log-likelihood; it changes no prediction, only how sure the
model says it is. The expected calibration error (ECE) compares stated confidence with
observed accuracy in 15 equal-width confidence bins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """The T > 0 minimising NLL of ``softmax(logits / T)`` on (held-out) ``labels``."""
    import torch
    import torch.nn.functional as F

    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")
    logits = logits.detach().float()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.exp())


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """ECE: the bin-weighted mean of |accuracy - confidence| over confidence bins."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)
