"""Learning-rate policies: Caffe's formulas, MXNet's FactorScheduler, cosine, one-cycle (as
PyTorch computes it) and warm-up, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from digitlab.recipes import ScheduleSection
from digitlab.train.schedules import lr_at


def sched(**kw) -> ScheduleSection:
    return ScheduleSection(**kw)


def test_fixed_is_constant():
    assert [lr_at(sched(), 0.1, it, 100) for it in (0, 50, 99)] == [0.1, 0.1, 0.1]


def test_caffe_step_multiplies_by_gamma_every_stepsize():
    s = sched(policy="step", gamma=0.1, stepsize=1000)
    assert lr_at(s, 0.01, 0, 5000) == 0.01
    assert lr_at(s, 0.01, 999, 5000) == 0.01
    assert lr_at(s, 0.01, 1000, 5000) == pytest.approx(0.001)
    assert lr_at(s, 0.01, 2500, 5000) == pytest.approx(1e-4)


def test_caffe_multistep_counts_the_stepvalues_passed():
    s = sched(policy="multistep", gamma=0.5, stepvalues=[100, 300])
    assert [lr_at(s, 1.0, it, 500) for it in (0, 99, 100, 299, 300, 499)] == [
        1.0,
        1.0,
        0.5,
        0.5,
        0.25,
        0.25,
    ]


def test_caffe_inv_is_the_lenet_solver_curve():
    s = sched(policy="inv", gamma=1e-4, power=0.75)
    assert lr_at(s, 0.01, 0, 10000) == 0.01
    # Caffe's lenet log prints lr = 0.00992565 at iteration 100 and 0.00594604 at 10,000
    assert lr_at(s, 0.01, 100, 10000) == pytest.approx(0.00992565, abs=5e-9)
    assert lr_at(s, 0.01, 10000, 10000) == pytest.approx(0.01 * 2**-0.75)
    assert lr_at(s, 0.01, 10000, 10000) == pytest.approx(0.00594604, abs=5e-9)


def test_caffe_exp_poly_and_sigmoid():
    assert lr_at(sched(policy="exp", gamma=0.99), 0.1, 10, 100) == pytest.approx(0.1 * 0.99**10)
    poly = sched(policy="poly", power=2.0)
    assert lr_at(poly, 0.1, 25, 100) == pytest.approx(0.1 * 0.75**2)
    assert lr_at(poly, 0.1, 100, 100) == 0.0
    sig = sched(policy="sigmoid", gamma=-0.01, stepsize=500)
    assert lr_at(sig, 0.1, 500, 1000) == pytest.approx(0.05)
    assert lr_at(sig, 0.1, 600, 1000) == pytest.approx(0.1 / (1 + math.exp(1.0)))


def test_mxnet_factor_decays_every_step_updates_and_stops_at_the_floor():
    s = sched(policy="factor", factor=0.95, factor_step=1000)
    # MXNet: num_update = it + 1; the first decay applies to update 1001 (it = 1000)
    assert lr_at(s, 0.01, 999, 36000) == 0.01
    assert lr_at(s, 0.01, 1000, 36000) == pytest.approx(0.0095)
    assert lr_at(s, 0.01, 35999, 36000) == pytest.approx(0.01 * 0.95**35)
    floor = sched(policy="factor", factor=0.5, factor_step=1, stop_factor_lr=1e-3)
    assert lr_at(floor, 1.0, 100, 200) == 1e-3


def test_cosine_runs_from_base_to_min_lr():
    s = sched(policy="cosine", min_lr=0.001)
    assert lr_at(s, 0.1, 0, 100) == pytest.approx(0.1)
    assert lr_at(s, 0.1, 50, 100) == pytest.approx((0.1 + 0.001) / 2)
    assert lr_at(s, 0.1, 100, 100) == pytest.approx(0.001)


@pytest.mark.parametrize(("total", "pct"), [(100, 0.3), (937, 0.25), (10, 0.5)])
def test_onecycle_matches_torch_one_cycle_lr(total, pct):
    s = sched(policy="onecycle", pct_start=pct, div_factor=25.0, final_div_factor=1e4)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    torch_sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=total, pct_start=pct, cycle_momentum=False
    )
    for it in range(total):
        assert lr_at(s, 0.1, it, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        torch_sched.step()


def test_onecycle_max_lr_overrides_the_solver_rate():
    s = sched(policy="onecycle", max_lr=0.5, pct_start=0.5)
    assert lr_at(s, 0.1, 0, 101) == pytest.approx(0.5 / 25)
    assert lr_at(s, 0.1, 49, 101) == pytest.approx(0.5, rel=1e-3)


def test_warmup_ramps_linearly_and_multiplies_any_policy():
    s = sched(policy="step", gamma=0.1, stepsize=1000, warmup_iters=100, warmup_start_factor=0.0)
    assert lr_at(s, 0.2, 0, 5000) == 0.0
    assert lr_at(s, 0.2, 50, 5000) == pytest.approx(0.1)
    assert lr_at(s, 0.2, 100, 5000) == pytest.approx(0.2)
    assert lr_at(s, 0.2, 1500, 5000) == pytest.approx(0.02)
    default_start = sched(warmup_iters=10)
    assert lr_at(default_start, 1.0, 0, 100) == pytest.approx(0.1)


def test_lr_is_a_pure_function_of_the_iteration():
    s = sched(policy="inv", gamma=1e-4, power=0.75, warmup_iters=20)
    forward = [lr_at(s, 0.01, it, 1000) for it in range(1000)]
    backward = [lr_at(s, 0.01, it, 1000) for it in reversed(range(1000))]
    assert forward == backward[::-1]
