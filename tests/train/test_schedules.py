"""Learning-rate policies: Caffe's formulas, MXNet's FactorScheduler, cosine, one-cycle (as
PyTorch computes it) and warm-up, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from digitlab.recipes import MAX_ITERS, MAX_LR, POLICY_NEEDS, ScheduleSection
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


# ----------------------------------------------------------------------------- never overflow


def _edges(lo: float, hi: float, **kw) -> st.SearchStrategy[float]:
    """Floats in [lo, hi] with the bounds and the smallest/largest floats over-represented."""
    edges = [x for x in (lo, hi, 5e-324, 1e-300, 1.0, 1e300, 1e308) if lo <= x <= hi]
    if kw.get("exclude_min"):
        edges = [x for x in edges if x > lo]
    return st.one_of(st.floats(lo, hi, **kw), st.sampled_from(edges))


def _accepted_gamma(policy: str) -> st.SearchStrategy[float]:
    if policy in ("step", "multistep", "exp"):
        return _edges(0.0, 1.0, exclude_min=True)
    if policy == "inv":
        return _edges(0.0, 1e308, exclude_min=True)
    return st.one_of(_edges(-1e308, 1e308), st.sampled_from([-1e308, -1.0, -1e-300]))


@st.composite
def accepted_schedules(draw) -> dict:
    """Every field a recipe reads, drawn over its whole accepted range, edges included."""
    policy = draw(st.sampled_from(sorted(POLICY_NEEDS)))
    steps = draw(st.lists(st.integers(0, MAX_ITERS), max_size=20, unique=True))
    return {
        "policy": policy,
        "gamma": draw(_accepted_gamma(policy)),
        "power": draw(_edges(0.0, 1e308)),
        "stepsize": draw(st.one_of(st.integers(1, MAX_ITERS), st.sampled_from([1, MAX_ITERS]))),
        "stepvalues": sorted(steps) or [0],
        "factor": draw(_edges(0.0, 1.0, exclude_min=True)),
        "factor_step": draw(st.integers(1, MAX_ITERS)),
        "stop_factor_lr": draw(_edges(0.0, MAX_LR)),
        "min_lr": draw(_edges(0.0, MAX_LR)),
        "max_lr": draw(st.one_of(st.none(), _edges(0.0, MAX_LR, exclude_min=True))),
        "pct_start": draw(st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)),
        "div_factor": draw(_edges(1.0, 1e308)),
        "final_div_factor": draw(_edges(1.0, 1e308)),
        "warmup_iters": draw(st.one_of(st.integers(0, MAX_ITERS), st.sampled_from([0, 1]))),
        "warmup_start_factor": draw(_edges(0.0, 1.0)),
    }


@settings(max_examples=400, deadline=None)
@given(
    kw=accepted_schedules(),
    base=_edges(0.0, MAX_LR, exclude_min=True),
    max_iter=st.one_of(st.integers(1, MAX_ITERS), st.sampled_from([1, 2, MAX_ITERS])),
    its=st.lists(st.integers(0, MAX_ITERS), max_size=4),
)
@pytest.mark.slow
def test_every_accepted_schedule_is_finite_and_non_negative_at_every_iteration(
    kw, base, max_iter, its
):
    """Over the whole accepted range of every field, the rate is a finite number in [0, the
    largest rate the recipe names] at the iterations where policies turn and at random ones:
    overflow is refused at load (gamma > 1 for step/exp, negative powers, div_factor < 1) or
    cannot happen (the sigmoid's stable form)."""
    s = ScheduleSection.model_validate(kw)  # the strategy stays inside what a recipe accepts
    ceiling = max(base, s.max_lr or 0.0, s.min_lr, s.stop_factor_lr) * (1 + 1e-9)
    turns = {0, 1, max_iter - 1, max_iter, s.stepsize, s.warmup_iters, *s.stepvalues[:3]}
    for it in sorted({min(t, MAX_ITERS) for t in turns | set(its)}):
        lr = lr_at(s, base, it, max_iter)
        assert math.isfinite(lr) and 0.0 <= lr <= ceiling, (kw, base, it, max_iter, lr)


ANY_FLOAT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, -1.0, 1e-300, 5e-324, 1e308, -1e308, 2.0, 0.5]),
)


@settings(max_examples=200, deadline=None)
@given(policy=st.sampled_from(sorted(POLICY_NEEDS)), gamma=ANY_FLOAT, power=ANY_FLOAT)
def test_any_gamma_and_power_is_refused_at_load_or_gives_a_finite_rate(policy, gamma, power):
    kw = {"policy": policy, "gamma": gamma, "power": power, "stepsize": 1000, "factor": 0.5}
    kw |= {"factor_step": 10, "stepvalues": [10, 1000]}
    try:
        s = ScheduleSection.model_validate(kw)
    except ValidationError:
        return  # refused in one line at load: nothing to compute
    for it in (0, 999, 1000, 10**6, MAX_ITERS - 1):
        lr = lr_at(s, 1.0, it, MAX_ITERS)
        assert math.isfinite(lr) and 0.0 <= lr <= 1.0, (kw, it, lr)


@pytest.mark.parametrize(
    "kw",
    [
        {"policy": "sigmoid", "gamma": 1e300, "stepsize": 1},
        {"policy": "sigmoid", "gamma": -1e300, "stepsize": MAX_ITERS},
        {"policy": "sigmoid", "gamma": -1.0, "stepsize": 1},  # exp(999,999) in Caffe's form
        {"policy": "inv", "gamma": 1e308, "power": 1e308},
        {"policy": "inv", "gamma": 1e308, "power": 0.0},
        {"policy": "poly", "power": 1e308},
        {"policy": "poly", "power": 0.0},
        {"policy": "exp", "gamma": 1.0},
        {"policy": "step", "gamma": 5e-324, "stepsize": 1},
        {"policy": "onecycle", "div_factor": 1.0, "final_div_factor": 1e308},
    ],
)
def test_extreme_accepted_parameters_give_a_finite_rate(kw):
    s = ScheduleSection(**kw)
    for it in (0, 1, 10**6, MAX_ITERS - 1):
        lr = lr_at(s, MAX_LR, it, MAX_ITERS)
        assert math.isfinite(lr) and 0.0 <= lr <= MAX_LR


def test_multistep_counts_thousands_of_stepvalues_without_a_loop_per_value():
    s = ScheduleSection(policy="multistep", gamma=0.5, stepvalues=list(range(0, 10_000, 10)))
    assert lr_at(s, 1.0, 0, 10_000) == 0.5
    assert lr_at(s, 1.0, 25, 10_000) == 0.5**3
    assert lr_at(s, 1.0, 9_999, 10_000) == 0.5**1000
