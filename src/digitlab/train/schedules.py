"""Learning-rate policies as pure functions of the iteration, so a resumed run is exact.

The Caffe policies follow ``SGDSolver::GetLearningRate`` (caffe/src/caffe/solvers/
sgd_solver.cpp) with ``it`` = Caffe's ``iter_``, the 0-based index of the update about to be
made. ``factor`` is MXNet's ``FactorScheduler``; ``cosine`` and ``onecycle`` match PyTorch's
``CosineAnnealingLR`` and ``OneCycleLR`` (cos annealing, no momentum cycling).

For every parameter a recipe accepts, the rate is finite and >= 0 at every iteration: the
recipe refuses growth that would overflow (gamma > 1 for step/exp, a negative power), and the
sigmoid is computed in the form that cannot overflow whatever gamma is.
"""

from __future__ import annotations

import bisect
import math

from digitlab.recipes import ScheduleSection


def lr_at(schedule: ScheduleSection, base_lr: float, it: int, max_iter: int) -> float:
    """The learning rate for update number ``it`` (0-based) of a ``max_iter``-update run."""
    lr = _policy_lr(schedule, base_lr, it, max(1, max_iter))
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
            return base * s.gamma ** bisect.bisect_right(s.stepvalues, it)
        case "exp":
            return base * s.gamma**it
        case "inv":
            return base * (1.0 + s.gamma * it) ** (-s.power)
        case "poly":
            return base * max(0.0, 1.0 - it / max_iter) ** s.power
        case "sigmoid":
            return base * _logistic(s.gamma * (it - s.stepsize))
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


def _logistic(z: float) -> float:
    """1 / (1 + e^-z) without overflow: e^-z is only taken where it is at most 1."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


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
