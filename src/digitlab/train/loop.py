"""The training loop: recipe in, run folder out.

The hot loop indexes preloaded uint8 tensors, augments and normalises the whole batch, and
steps; all bookkeeping (logs, validation, checkpoints) happens between intervals. Everything
random is a function of (seed, epoch) or (seed, iteration) or lives in the checkpoint, so a
resumed run continues exactly where the killed one stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError
from digitlab.fileio import write_text_atomic
from digitlab.system import resolve_device
from digitlab.train.checkpoint import (
    ResumePoint,
    checkpoint_path,
    find_resume_point,
    parse_checkpoint,
    prune_partial_files,
    save_checkpoint,
)
from digitlab.train.checkpoint_models import recipe_meta, recipe_normalization
from digitlab.train.data import (
    epoch_order,
    test_set,
    total_iterations,
    training_size,
    training_splits,
)
from digitlab.train.distributed import (
    DEFAULT_TIMEOUT_S,
    check_shards,
    copy_buffers_from_main,
    gather_rng_states,
    joined,
    rank_seed,
    share_from_main,
    sum_over_workers,
    threads_per_worker,
    wrap,
)
from digitlab.train.init import init_meta, start_from
from digitlab.train.runfolder import (
    RunLock,
    check_same_model,
    lock_run_folder,
    refuse_existing_run,
)
from digitlab.train.runlog import RunLog, SilentLog, tested_at
from digitlab.train.world import World, world_from_env

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import torch
    from torch import nn

    from digitlab.data.dataset import Dataset
    from digitlab.models.registry import Normalization
    from digitlab.recipes import Recipe


@dataclass
class RunResult:
    """Where a finished run lives and what it measured."""

    run_dir: Path
    metrics: dict[str, Any]
    iterations: int
    rank: int = 0  # this worker's rank; rank 0 wrote the run folder


def build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    import torch

    s = recipe.solver
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # not frozen
    groups = [{"params": [p for n, p in named if not n.endswith(".bias")], "lr_mult": 1.0}]
    biases = [p for n, p in named if n.endswith(".bias")]
    if biases:
        groups.append({"params": biases, "lr_mult": float(s.bias_lr_mult)})
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay
        )
    kwargs = {"lr": s.lr, "betas": tuple(s.betas), "eps": s.eps, "weight_decay": s.weight_decay}
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


class _Best:
    """Best-model selection by a validation metric, with optional early stopping."""

    def __init__(self, metric: str | None, patience: int | None) -> None:
        self.metric, self.patience = metric, patience
        self.value: float | None = None
        self.iteration = 0
        self.state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def update(self, val: dict[str, float], it: int, model: nn.Module) -> None:
        if not self.metric:
            return
        v = val["loss"] if self.metric == "val_loss" else -val["accuracy"]
        if self.value is None or v < self.value:
            self.value, self.iteration, self.stale = v, it, 0
            self.state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        else:
            self.stale += 1

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience


# ---------------------------------------------------------------------------- the run folder


@contextlib.contextmanager
def _run_folder(
    run_dir: Path, recipe: Recipe, resume: bool, world: World
) -> Iterator[ResumePoint | None]:
    """Rank 0 holds the run folder locked for the block; the checkpoint to resume from.

    Everything that can refuse (another trainer, a finished run, another model, no readable
    checkpoint) does so before the folder is touched. Other workers get None: they parse
    rank 0's checkpoint bytes.
    """
    if not world.is_main:
        yield None
        return
    lock, point = _open_run_folder(run_dir, recipe, resume)
    try:
        yield point
    finally:
        lock.release()


def _open_run_folder(
    run_dir: Path, recipe: Recipe, resume: bool
) -> tuple[RunLock, ResumePoint | None]:
    from digitlab.recipes import recipe_to_toml

    refuse_existing_run(run_dir, resume)
    lock = lock_run_folder(run_dir)
    try:
        point = find_resume_point(run_dir) if resume else None
        if point is not None:
            check_same_model(run_dir, recipe)
            _refuse_finished_run(run_dir, recipe, int(point.checkpoint["info"]["iteration"]))
        prune_partial_files(run_dir)
        write_text_atomic(run_dir / "recipe.toml", recipe_to_toml(recipe))
    except BaseException:
        lock.release()
        raise
    return lock, point


def _refuse_finished_run(run_dir: Path, recipe: Recipe, start: int) -> None:
    """A run tested at its last checkpoint is finished: resuming it would only test it again."""
    if tested_at(run_dir) != start:
        return
    total = total_iterations(recipe, math.ceil(training_size(recipe) / recipe.data.batch_size))
    if start >= total:
        raise DigitlabError(
            f"{run_dir} is finished ({start} iterations, model saved); "
            "to train it longer, resume with more --iters or --epochs"
        )


# ---------------------------------------------------------------------------- training


def train(
    recipe: Recipe,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool | None = None,
    tensorboard: bool = False,
    threads: int | None = None,
    world: World | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
) -> RunResult:
    """Train ``recipe`` into ``run_dir`` (or continue it with ``resume``); returns the result.

    The run folder gets recipe.toml, metrics.jsonl, train.log, checkpoints/ and the final
    model artifact (the best validation model when the recipe selects one); with
    ``tensorboard`` every event is mirrored into RUN/tensorboard/ as well. ``threads`` sets
    torch's thread count (default: see :func:`~digitlab.train.distributed.threads_per_worker`).

    Under torchrun (``world`` defaults to what its environment variables say) every worker
    calls this with the same arguments: each takes its share of every global batch, the
    gradients are averaged by DistributedDataParallel, and rank 0 alone writes the run
    folder. Without BatchNorm the result equals one process's; BatchNorm normalises each
    worker's share with that share's statistics. A torchelastic restart resumes the run.

    ``on_validation(iteration, {"loss": ..., "accuracy": ...})`` is called after every
    validation (on every worker, with the same values); an exception it raises, such as a
    sweep's pruning signal, stops the run there and propagates to the caller.
    """
    import torch

    world = world or world_from_env()
    torch.set_num_threads(threads or threads_per_worker(world.local_size))
    resume = resume or world.restarts > 0
    run_dir = Path(run_dir)
    with (
        joined(world, resolve_device(device), timeout_s) as dev,
        _run_folder(run_dir, recipe, resume, world) as point,
    ):
        run = _start(recipe, run_dir, resume, point, dev, world, progress, tensorboard)
        with contextlib.closing(run.log):
            return _train(run, on_validation)


def _train(run: _Run, on_validation: Callable[[int, dict[str, float]], None] | None) -> RunResult:
    """The steps, the bookkeeping at its intervals, then the test and the artifact."""
    run.log.start(run.it)
    run.clock.start()
    while run.it < run.total:
        _step(run)
        log_now, val_now, ckpt_now = _due(run)
        if not (log_now or val_now or ckpt_now):
            continue
        run.clock.pause()  # bookkeeping is not training time
        totals = run.meter.totals(run.world, run.dev)
        _stop_if_diverged(run, totals[0])
        if log_now:
            _log_training(run, totals)
        if val_now:
            _validate(run, on_validation)
        if ckpt_now:
            _checkpoint(run)
        run.clock.resume()
        if run.best.should_stop:
            patience = run.best.patience
            run.log.text(
                f"early stop at iteration {run.it}: no improvement in {patience} validations"
            )
            break
    run.log.finish()
    return _finish(run)


@dataclass
class _Run:
    """One worker's training state, which the functions below advance."""

    recipe: Recipe
    run_dir: Path
    world: World
    dev: str
    model: nn.Module
    net: nn.Module  # the model, or DistributedDataParallel around it: training goes through it
    optimizer: torch.optim.Optimizer
    norm: Normalization
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None
    train_ds: Dataset
    val_ds: Dataset | None
    digests: dict[str, str]
    classes: int  # the model's outputs: the data's classes, or the init model's
    x: torch.Tensor  # every training image and label, on the device
    y: torch.Tensor
    ipe: int  # iterations per epoch
    total: int
    best: _Best
    log: RunLog | SilentLog
    clock: _Clock
    meter: _Meter
    it: int = 0
    lr: float = 0.0
    saved_at: int | None = None  # the newest checkpoint's iteration
    order: torch.Tensor | None = None  # the data order of epoch order_epoch
    order_epoch: int = -1


class _Clock:
    """Seconds of a run across resumes: ``elapsed`` (wall, with validation and checkpoints),
    ``compute`` (optimisation steps only, as model.json reports them) and ``busy`` (steps
    since the last log line, for an honest samples/s)."""

    def __init__(self, elapsed: float = 0.0, compute: float = 0.0) -> None:
        self.before, self.compute, self.busy = elapsed, compute, 0.0
        self.wall0 = self.mark = time.perf_counter()

    def start(self) -> None:
        self.wall0 = self.mark = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.wall0

    def pause(self) -> None:
        seconds = time.perf_counter() - self.mark
        self.busy += seconds
        self.compute += seconds

    def resume(self) -> None:
        self.mark = time.perf_counter()


class _Meter:
    """Training loss and accuracy summed on the device since the last log line, so the hot
    loop never waits for the device."""

    def __init__(self, dev: str) -> None:
        import torch

        self.loss = torch.zeros((), device=dev)
        self.correct = torch.zeros((), device=dev, dtype=torch.long)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss.detach() * labels.shape[0]
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.seen += labels.shape[0]

    def totals(self, world: World, dev: str) -> list[float]:
        """Loss sum, correct and seen, summed over the workers."""
        return sum_over_workers(world, [self.loss, self.correct, self.seen], dev)

    def reset(self) -> None:
        self.loss.zero_()
        self.correct.zero_()
        self.seen = 0


def _start(
    recipe: Recipe,
    run_dir: Path,
    resume: bool,
    point: ResumePoint | None,
    dev: str,
    world: World,
    progress: bool | None,
    tensorboard: bool,
) -> _Run:
    """Everything a run holds before its first step, at the checkpoint it resumes from."""
    # every worker parses rank 0's checkpoint bytes
    blob = share_from_main(world, point.blob if point is not None else None, dev)
    name = point.path.name if point is not None else "rank 0's checkpoint"
    ck = point.checkpoint if point is not None else None  # rank 0 parsed it when it chose it
    if ck is None and blob:
        ck = parse_checkpoint(blob, name)
    run = _build(recipe, run_dir, dev, world, progress, tensorboard)
    if ck is not None:
        _restore(run, ck, name)
        for reason in point.skipped if point is not None else []:
            run.log.text(f"skipped {reason}")
        run.log.truncate_after(run.it)
        run.log.text(f"resumed from {name} at iteration {run.it} of {run.total}")
    elif resume:
        run.log.truncate_after(0)
        run.log.text("no checkpoint found; starting from iteration 0")
    if run.it >= run.total:
        run.log.text(
            f"nothing to do: the run already has {run.it} iterations (asked for {run.total})"
        )
    run.net = wrap(world, run.model, dev)  # after the restore: DDP starts from rank 0's weights
    run.net.train()
    return run


def _build(
    recipe: Recipe, run_dir: Path, dev: str, world: World, progress: bool | None, tb: bool
) -> _Run:
    """A fresh run: data on the device, the model (every worker with the same initial
    weights), its optimizer, augmentation and log."""
    import torch

    from digitlab.models import create_model
    from digitlab.train.schedules import lr_at

    seed = int(recipe.seed)
    torch.manual_seed(seed)
    notes: list[str] = []
    train_ds, val_ds, digests = training_splits(recipe, notes.append)
    norm = recipe_normalization(recipe)
    init = init_meta(recipe)
    classes = max(train_ds.num_classes, init.num_classes if init else 0)  # keeps "not a digit"
    model = create_model(recipe.model.name, **recipe.model_options(classes))
    model = start_from(model, recipe).to(dev)
    with torch.no_grad():  # eval mode: the probe must not touch BN statistics or the RNG
        outputs = model.eval()(torch.zeros(1, 1, 28, 28, device=dev)).shape[-1]
    if outputs != classes:
        raise DigitlabError(
            f"recipe {recipe.name}: model {recipe.model.name} has {outputs} outputs but the data "
            f"has {classes} classes (set model.options.num_classes = {classes})"
        )
    optimizer = build_optimizer(recipe, model)
    augment = None
    if recipe.augment.enabled:
        from digitlab.augment import Augmenter

        augment = Augmenter(recipe.augment)
    x, y = (t.to(dev) for t in train_ds.tensors())
    bs = recipe.data.batch_size
    check_shards(len(train_ds), bs, world.size)
    ipe = math.ceil(len(train_ds) / bs)
    total = total_iterations(recipe, ipe)
    log: RunLog | SilentLog = (
        RunLog(run_dir, total=total, progress=progress, tensorboard=tb)
        if world.is_main
        else SilentLog()
    )
    for line in notes:
        log.text(line)
    if world.active:
        # the same initial weights everywhere (same seed), then one dropout stream per worker
        torch.manual_seed(rank_seed(seed, world.rank))
        log.text(
            f"data-parallel on {world.size} workers ({'nccl' if 'cuda' in dev else 'gloo'}), "
            f"{torch.get_num_threads()} threads each, sharing every batch of {bs}"
        )
    return _Run(
        recipe=recipe,
        run_dir=run_dir,
        world=world,
        dev=dev,
        model=model,
        net=model,
        optimizer=optimizer,
        norm=norm,
        augment=augment,
        train_ds=train_ds,
        val_ds=val_ds,
        digests=digests,
        classes=classes,
        x=x,
        y=y,
        ipe=ipe,
        total=total,
        best=_Best(recipe.train.select_best, recipe.train.early_stop_patience),
        log=log,
        clock=_Clock(),
        meter=_Meter(dev),
        lr=lr_at(recipe.schedule, recipe.solver.lr, 0, total),
    )


def _restore(run: _Run, ck: dict[str, Any], name: str) -> None:
    """Continue from checkpoint ``ck``: weights, optimizer, RNG streams, clock and best model."""
    import torch

    from digitlab.train.schedules import lr_at

    try:
        run.model.load_state_dict(ck["model_state"])
        run.optimizer.load_state_dict(ck["optim_state"])
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise DigitlabError(f"{name}: does not fit this recipe's model ({first})") from None
    info, world = ck["info"], run.world
    run.it = run.saved_at = int(info["iteration"])
    run.lr = lr_at(run.recipe.schedule, run.recipe.solver.lr, run.it, run.total)
    run.clock = _Clock(float(info["elapsed"]), float(info.get("compute", 0.0)))
    torch.set_rng_state(ck["rng_state"])
    streams = ck["extra"].get("rng.workers")
    if world.active and streams is not None and streams.shape[0] == world.size:
        torch.set_rng_state(streams[world.rank].clone())  # a view of a row crashes it
    elif world.active:  # another number of workers: fresh dropout streams
        torch.manual_seed(rank_seed(int(run.recipe.seed), world.rank, run.it))
    best = run.best
    best.value, best.iteration, best.stale = info["best_value"], info["best_iter"], info["stale"]
    saved = {k[5:]: v.to(run.dev) for k, v in ck["extra"].items() if k.startswith("best.")}
    best.state = saved or None


def _step(run: _Run) -> None:
    """One optimisation step on this worker's share of batch ``run.it``."""
    import torch.nn.functional as F

    from digitlab.train.schedules import lr_at

    xb, yb, weight = _batch(run)
    run.lr = lr_at(run.recipe.schedule, run.recipe.solver.lr, run.it, run.total)
    for group in run.optimizer.param_groups:
        group["lr"] = run.lr * group["lr_mult"]
    logits = run.net(run.norm.apply(xb))
    loss = F.cross_entropy(logits, yb, label_smoothing=float(run.recipe.solver.label_smoothing))
    run.optimizer.zero_grad(set_to_none=True)
    (loss * weight).backward()
    run.optimizer.step()
    run.meter.add(loss, logits, yb)
    run.it += 1


def _batch(run: _Run) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This worker's share of batch ``run.it``, augmented, and the share's loss weight."""
    import torch

    seed, bs = int(run.recipe.seed), run.recipe.data.batch_size
    epoch, pos = divmod(run.it, run.ipe)
    if epoch != run.order_epoch:
        run.order, run.order_epoch = epoch_order(seed, epoch, len(run.y)).to(run.dev), epoch
    idx = run.order[pos * bs : (pos + 1) * bs]
    xb, yb = run.x[idx], run.y[idx]
    if run.augment is not None:  # the whole batch, so each image gets what one process gives it
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * run.it + 1)
        xb = run.augment(xb.cpu(), gen).to(run.dev)
    # DDP averages gradients over workers, so a share of b of the batch's B images is
    # weighted b*W/B: the average is then the gradient of the whole batch's mean (one worker:
    # the whole batch, weight 1).
    share = run.world.part(idx.shape[0])
    weight = (share.stop - share.start) * run.world.size / idx.shape[0]
    return xb[share], yb[share], weight


def _due(run: _Run) -> tuple[bool, bool, bool]:
    """Whether iteration ``run.it`` logs, validates and checkpoints; the last one does all."""
    it, last = run.it, run.it == run.total
    val_every, ckpt_every = run.recipe.intervals(run.ipe)
    return (
        it % run.recipe.train.log_interval == 0 or last,
        it % val_every == 0 or last,
        bool(ckpt_every and it % ckpt_every == 0) or last or run.best.should_stop,
    )


def _stop_if_diverged(run: _Run, loss_sum: float) -> None:
    """A diverged run stops before it saves NaN weights that evaluate would refuse."""
    if math.isfinite(loss_sum):
        return
    kept = (
        f"its last checkpoint is iteration {run.saved_at}" if run.saved_at else "no checkpoint yet"
    )
    message = (
        f"the training loss became {loss_sum} by iteration {run.it}, so the run stopped "
        f"({kept}); lower solver.lr or change the recipe and train again"
    )
    run.log.text(message, echo=False)  # the CLI prints the error itself
    raise DigitlabError(message)


def _log_training(run: _Run, totals: list[float]) -> None:
    loss_sum, correct, seen = totals
    busy = run.clock.busy
    run.log.event(
        phase="train",
        iter=run.it,
        epoch=run.it / run.ipe,
        loss=loss_sum / seen,
        accuracy=correct / seen,
        lr=run.lr,
        elapsed=run.clock.elapsed,
        samples_per_s=seen / busy if busy > 0 else 0.0,
    )
    run.meter.reset()
    run.clock.busy = 0.0


def _validate(run: _Run, on_validation: Callable[[int, dict[str, float]], None] | None) -> None:
    if run.val_ds is None:
        return
    val = _score(run, run.val_ds)
    run.best.update(val, run.it, run.model)
    run.log.event(
        phase="val",
        iter=run.it,
        epoch=run.it / run.ipe,
        lr=run.lr,
        elapsed=run.clock.elapsed,
        train_seconds=round(run.clock.compute, 4),  # optimisation only, as in model.json
        **val,
    )
    if on_validation is not None:
        on_validation(run.it, val)


def _score(run: _Run, ds: Dataset) -> dict[str, float]:
    """Loss and accuracy on ``ds``, each worker scoring its share."""
    import torch.nn.functional as F

    from digitlab.evaluate import batched_logits

    copy_buffers_from_main(run.world, run.model)
    run.net.eval()
    x, y = (t.to(run.dev) for t in ds.tensors())
    share = run.world.part(len(ds))
    logits = batched_logits(run.model, x[share], run.norm.apply, run.recipe.data.eval_batch_size)
    sums = [
        F.cross_entropy(logits, y[share], reduction="sum"),
        (logits.argmax(1) == y[share]).sum(),
    ]
    run.net.train()
    loss_sum, correct = sum_over_workers(run.world, sums, run.dev)
    return {"loss": loss_sum / len(ds), "accuracy": correct / len(ds)}


def _checkpoint(run: _Run) -> None:
    """Everything the next resume needs; rank 0 writes it, every worker gives its RNG state."""
    import torch

    extra = {f"best.{k}": v for k, v in (run.best.state or {}).items()}
    streams = gather_rng_states(run.world, run.dev)
    if streams is not None:
        extra["rng.workers"] = streams
    run.saved_at = run.it
    if not run.world.is_main:
        return
    info = {
        "iteration": run.it,
        "elapsed": run.clock.elapsed,
        "compute": run.clock.compute,
        "best_value": run.best.value,
        "best_iter": run.best.iteration,
        "stale": run.best.stale,
    }
    save_checkpoint(
        checkpoint_path(run.run_dir, run.it),
        run.model.state_dict(),
        run.optimizer.state_dict(),
        torch.get_rng_state(),
        info,
        extra,
    )


def _finish(run: _Run) -> RunResult:
    """Score the saved model (the best validation weights when selecting, else the final
    ones) on the test set, write the artifact and the test event."""
    from digitlab.artifact import save_artifact

    if run.best.state is not None:
        run.model.load_state_dict(run.best.state)
    elapsed, compute, it = run.clock.elapsed, run.clock.compute, run.it
    test = _score(run, test_set(run.recipe))
    val = _score(run, run.val_ds) if run.val_ds is not None else None
    metrics: dict[str, Any] = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "iterations": it,
        "epochs": it / run.ipe,
        "train_seconds": round(compute, 3),  # optimisation steps only
        "wall_seconds": round(elapsed, 3),  # including validation and checkpoints
    }
    if run.world.active:
        metrics["workers"] = run.world.size
    if val is not None:
        metrics.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
    if run.best.metric:
        metrics.update(selected_by=run.best.metric, selected_iter=run.best.iteration)
    if run.world.is_main:
        meta = recipe_meta(
            run.recipe,
            run.classes,
            metrics=metrics,
            data_digests=run.digests,
            trained_on=run.train_ds.name,
        )
        save_artifact(run.run_dir, run.model.eval(), meta)
    run.log.event(
        phase="test",
        iter=it,
        epoch=it / run.ipe,
        elapsed=elapsed,
        loss=test["loss"],
        accuracy=test["accuracy"],
        lr=run.lr,
    )
    run.log.text(
        f"done: {it} iterations, {compute:.1f}s of training ({elapsed:.1f}s with validation); "
        f"test accuracy {test['accuracy']:.4%}"
    )
    return RunResult(run.run_dir, metrics, it, run.world.rank)
