"""Learning-rate policies as pure functions of the iteration, so a resumed run is exact.

The Caffe policies follow ``SGDSolver::GetLearningRate`` (caffe/src/caffe/solvers/
sgd_solver.cpp) with ``it`` = Caffe's ``iter_``, the 0-based index of the update about to be
made. ``factor`` is MXNet's ``FactorScheduler``; ``cosine`` and ``onecycle`` match PyTorch's
``CosineAnnealingLR`` and ``OneCycleLR`` (cos annealing, no momentum cycling).
"""

from __future__ import annotations

import math

from digitlab.recipes import ScheduleSection


def lr_at(schedule: ScheduleSection, base_lr: float, it: int, max_iter: int) -> float:
    """The learning rate for update number ``it`` (0-based) of a ``max_iter``-update run."""
    lr = _policy_lr(schedule, base_lr, it, max_iter)
    if it < schedule.warmup_iters:
        start = schedule.warmup_start_factor
        lr *= start + (1.0 - start) * it / schedule.warmup_iters
    return lr


def _policy_lr(s: ScheduleSection, base: float, it: int, max_iter: int) -> float:
    match s.policy:
        case "fixed":
            return base
        case "step":
            return base * s.gamma ** (it // s.stepsize)
        case "multistep":
            return base * s.gamma ** sum(it >= v for v in s.stepvalues)
        case "exp":
            return base * s.gamma**it
        case "inv":
            return base * (1.0 + s.gamma * it) ** (-s.power)
        case "poly":
            return base * max(0.0, 1.0 - it / max_iter) ** s.power
        case "sigmoid":
            return base / (1.0 + math.exp(-s.gamma * (it - s.stepsize)))
        case "factor":
            # MXNet counts updates from 1 and decays when num_update > count + step,
            # i.e. at 0-based it = step, 2*step, ...; the rate never drops below stop_factor_lr.
            return max(base * s.factor ** (it // s.factor_step), s.stop_factor_lr)
        case "cosine":
            t = min(it, max_iter) / max_iter
            return s.min_lr + (base - s.min_lr) * (1.0 + math.cos(math.pi * t)) / 2.0
        case "onecycle":
            return _onecycle(s, s.max_lr or base, it, max_iter)
    raise ValueError(f"unknown lr policy {s.policy!r}")


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def _onecycle(s: ScheduleSection, peak: float, it: int, max_iter: int) -> float:
    """torch OneCycleLR (two phases): up from peak/div to peak, then down to start/final_div."""
    initial = peak / s.div_factor
    final = initial / s.final_div_factor
    up_end = float(s.pct_start * max_iter) - 1.0
    down_end = float(max_iter - 1)
    it = min(it, max_iter - 1)
    if it <= up_end:
        return _cos_anneal(initial, peak, it / up_end if up_end > 0 else 1.0)
    return _cos_anneal(peak, final, (it - up_end) / (down_end - up_end))
