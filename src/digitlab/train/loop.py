"""The training loop: recipe in, run folder out.

The hot loop indexes preloaded uint8 tensors, augments and normalises the whole batch, and
steps; all bookkeeping (logs, validation, checkpoints) happens between intervals. Everything
random is a function of (seed, epoch) or (seed, iteration) or lives in the checkpoint, so a
resumed run continues exactly where the killed one stopped.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError
from digitlab.fileio import write_text_atomic
from digitlab.train.checkpoint import (
    ResumePoint,
    checkpoint_path,
    find_resume_point,
    parse_checkpoint,
    prune_partial_files,
    save_checkpoint,
)
from digitlab.train.distributed import (
    DEFAULT_TIMEOUT_S,
    SilentLog,
    World,
    copy_buffers_from_main,
    gather_rng_states,
    is_lost_peer,
    join,
    leave,
    lost_peer_error,
    rank_seed,
    share_from_main,
    sum_over_workers,
    threads_per_worker,
    world_from_env,
    wrap,
)
from digitlab.train.runfolder import (
    RunLock,
    check_same_model,
    lock_run_folder,
    refuse_existing_run,
)
from digitlab.train.runlog import RunLog, tested_at

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from digitlab.data.dataset import Dataset
    from digitlab.recipes import Recipe


@dataclass
class RunResult:
    """Where a finished run lives and what it measured."""

    run_dir: Path
    metrics: dict[str, Any]
    iterations: int
    rank: int = 0  # this worker's rank; rank 0 wrote the run folder


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DigitlabError("--device cuda asked for, but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise DigitlabError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def training_splits(recipe: Recipe) -> tuple[Dataset, Dataset | None, dict[str, str]]:
    """The recipe's training set and validation set (a named split or the Keras-style tail)."""
    from digitlab.data.dataset import load_mnist, split_of

    mnist = load_mnist()
    digests = {**mnist["train"].digests, **mnist["test"].digests}
    train = split_of(mnist, recipe.data.train_split)
    val = None
    if recipe.data.val_fraction:
        n_val = int(round(len(train) * recipe.data.val_fraction))
        val = train.subset(slice(len(train) - n_val, None), f"last {n_val} of {train.name}")
        train = train.subset(slice(0, len(train) - n_val), train.name)
    elif recipe.data.val_split:
        val = split_of(mnist, recipe.data.val_split)
    if recipe.data.uploads:
        train = train.with_uploads(recipe.data.uploads, 2 * recipe.seed + 1)
        if val is not None:
            val = val.with_uploads(max(1, recipe.data.uploads // 5), 2 * recipe.seed + 2)
    if recipe.data.negatives:
        pieces = recipe.data.number_pieces
        train = train.with_negatives(recipe.data.negatives, 2 * recipe.seed + 1, pieces)
        if val is not None:
            val = val.with_negatives(
                max(1, recipe.data.negatives // 5), 2 * recipe.seed + 2, pieces // 5
            )
    return train, val, digests


def training_size(recipe: Recipe) -> int:
    """The number of images :func:`training_splits` trains on, without building them."""
    from digitlab.data.dataset import load_mnist, split_of

    n = len(split_of(load_mnist(), recipe.data.train_split))
    if recipe.data.val_fraction:
        n -= int(round(n * recipe.data.val_fraction))
    return n + recipe.data.uploads + recipe.data.negatives + recipe.data.number_pieces


def total_iterations(recipe: Recipe, iters_per_epoch: int) -> int:
    if recipe.train.iters is not None:
        return int(recipe.train.iters)
    return int(math.ceil(float(recipe.train.epochs) * iters_per_epoch))


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a pure function of (seed, epoch), so resume needs no state."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    import torch

    s = recipe.solver
    named = list(model.named_parameters())
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


def check_shards(n: int, batch_size: int, workers: int) -> None:
    """Every worker needs at least one image of every batch, the epoch's last one included."""
    if workers == 1:
        return
    last = n % batch_size or batch_size
    if min(batch_size, last) < workers:
        raise DigitlabError(
            f"{workers} workers cannot share a batch of {min(batch_size, last)} images "
            f"(batch_size {batch_size}, {n} training images); use fewer workers or "
            "another batch size"
        )


def _open_run_folder(
    run_dir: Path, recipe: Recipe, resume: bool
) -> tuple[RunLock, ResumePoint | None]:
    """Lock and check the run folder (rank 0's job); the checkpoint to resume from.

    Everything that can refuse (another trainer, a finished run, another model, no readable
    checkpoint) does so before the folder is touched.
    """
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


def _check_finite(loss_sum: float, it: int, saved_at: int | None, log: RunLog | SilentLog) -> None:
    """A diverged run stops before it saves NaN weights that evaluate would refuse."""
    if math.isfinite(loss_sum):
        return
    kept = f"its last checkpoint is iteration {saved_at}" if saved_at else "no checkpoint yet"
    message = (
        f"the training loss became {loss_sum} by iteration {it}, so the run stopped ({kept}); "
        "lower solver.lr or change the recipe and train again"
    )
    log.text(message, echo=False)  # the CLI prints the error itself
    raise DigitlabError(message)


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
    dev = resolve_device(device)
    resume = resume or world.restarts > 0
    if not world.active:
        return _train(
            recipe, Path(run_dir), resume, dev, progress, tensorboard, world, on_validation
        )
    try:
        dev = join(world, dev, timeout_s)
        result = _train(
            recipe, Path(run_dir), resume, dev, progress, tensorboard, world, on_validation
        )
        leave(finished=True)
    except BaseException as exc:
        if is_lost_peer(exc):  # the group is broken: no goodbye
            raise lost_peer_error(world, exc) from None
        leave()
        raise
    return result


def _train(
    recipe: Recipe,
    run_dir: Path,
    resume: bool,
    dev: str,
    progress: bool | None,
    tensorboard: bool,
    world: World,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
) -> RunResult:
    # rank 0 alone touches the run folder; every worker parses rank 0's checkpoint bytes
    lock, point = _open_run_folder(run_dir, recipe, resume) if world.is_main else (None, None)
    try:
        return _train_locked(
            recipe, run_dir, resume, dev, progress, tensorboard, world, on_validation, point
        )
    finally:
        if lock is not None:
            lock.release()


def _train_locked(
    recipe: Recipe,
    run_dir: Path,
    resume: bool,
    dev: str,
    progress: bool | None,
    tensorboard: bool,
    world: World,
    on_validation: Callable[[int, dict[str, float]], None] | None,
    point: ResumePoint | None,
) -> RunResult:
    import torch
    import torch.nn.functional as F

    from digitlab.artifact import save_artifact
    from digitlab.evaluate import batched_logits
    from digitlab.models import create_model, get_entry
    from digitlab.models.registry import Normalization
    from digitlab.train.schedules import lr_at

    blob = point.blob if point is not None else None
    if world.active:
        blob = share_from_main(world, blob, dev)
    ckpt_name = point.path.name if point is not None else "rank 0's checkpoint"
    if point is not None:
        ck = point.checkpoint  # rank 0 parsed it when it chose it
    else:
        ck = parse_checkpoint(blob, ckpt_name) if blob else None

    seed = int(recipe.seed)
    torch.manual_seed(seed)
    train_ds, val_ds, digests = training_splits(recipe)
    entry = get_entry(recipe.model.name)
    norm = (
        Normalization(*recipe.model.normalization)
        if recipe.model.normalization
        else entry.normalization
    )
    model = create_model(recipe.model.name, **recipe.model.options).to(dev)
    classes = train_ds.num_classes
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

    x_all, y_all = (t.to(dev) for t in train_ds.tensors())
    n, bs = len(train_ds), recipe.data.batch_size
    check_shards(n, bs, world.size)
    ipe = math.ceil(n / bs)
    total = total_iterations(recipe, ipe)
    best = _Best(recipe.train.select_best, recipe.train.early_stop_patience)
    log: RunLog | SilentLog = (
        RunLog(run_dir, total=total, progress=progress, tensorboard=tensorboard)
        if world.is_main
        else SilentLog()
    )
    if world.active:
        # the same initial weights everywhere (same seed), then one dropout stream per worker
        torch.manual_seed(rank_seed(seed, world.rank))
        log.text(
            f"data-parallel on {world.size} workers ({'nccl' if 'cuda' in dev else 'gloo'}), "
            f"{torch.get_num_threads()} threads each, sharing every batch of {bs}"
        )

    start, elapsed, compute = 0, 0.0, 0.0
    saved_at: int | None = None
    if ck is not None:
        try:
            model.load_state_dict(ck["model_state"])
            optimizer.load_state_dict(ck["optim_state"])
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[-1].strip()
            raise DigitlabError(
                f"{ckpt_name}: does not fit this recipe's model ({first})"
            ) from None
        info = ck["info"]
        start, elapsed = int(info["iteration"]), float(info["elapsed"])
        saved_at = start
        compute = float(info.get("compute", 0.0))
        torch.set_rng_state(ck["rng_state"])
        streams = ck["extra"].get("rng.workers")
        if world.active and streams is not None and streams.shape[0] == world.size:
            torch.set_rng_state(streams[world.rank].clone())  # a view of a row crashes it
        elif world.active:  # another number of workers: fresh dropout streams
            torch.manual_seed(rank_seed(seed, world.rank, start))
        best.value, best.iteration, best.stale = (
            info["best_value"],
            info["best_iter"],
            info["stale"],
        )
        saved = {k[5:]: v.to(dev) for k, v in ck["extra"].items() if k.startswith("best.")}
        best.state = saved or None
        for reason in point.skipped if point is not None else []:
            log.text(f"skipped {reason}")
        log.truncate_after(start)
        log.text(f"resumed from {ckpt_name} at iteration {start} of {total}")
    elif resume:
        log.truncate_after(0)
        log.text("no checkpoint found; starting from iteration 0")
    if start >= total:
        log.text(f"nothing to do: the run already has {start} iterations (asked for {total})")
    net = wrap(model, dev) if world.active else model  # the training forward goes through net

    def prepare(xb: torch.Tensor) -> torch.Tensor:
        return norm.apply(xb)

    def score(ds: Dataset) -> dict[str, float]:
        """Loss and accuracy on ``ds``, each worker scoring its share."""
        if world.active:
            copy_buffers_from_main(model)
        net.eval()
        x, y = (t.to(dev) for t in ds.tensors())
        share = world.part(len(ds))
        logits = batched_logits(model, x[share], prepare, recipe.data.eval_batch_size)
        sums = [
            F.cross_entropy(logits, y[share], reduction="sum"),
            (logits.argmax(1) == y[share]).sum(),
        ]
        net.train()
        loss_sum, correct = (
            sum_over_workers(sums, dev) if world.active else [float(t) for t in sums]
        )
        return {"loss": loss_sum / len(ds), "accuracy": correct / len(ds)}

    def validate(it: int) -> dict[str, float] | None:
        return None if val_ds is None else score(val_ds)

    def checkpoint(it: int) -> None:
        extra = {f"best.{k}": v for k, v in (best.state or {}).items()}
        if world.active:
            extra["rng.workers"] = gather_rng_states(world, dev)
        if not world.is_main:
            return
        info = {
            "iteration": it,
            "elapsed": elapsed,
            "compute": compute,
            "best_value": best.value,
            "best_iter": best.iteration,
            "stale": best.stale,
        }
        save_checkpoint(
            checkpoint_path(run_dir, it),
            model.state_dict(),
            optimizer.state_dict(),
            torch.get_rng_state(),
            info,
            extra,
        )

    smoothing = float(recipe.solver.label_smoothing)
    log_every, val_every = recipe.train.log_interval, recipe.train.val_interval
    ckpt_every = recipe.train.checkpoint_interval
    run_loss = torch.zeros((), device=dev)
    run_correct = torch.zeros((), device=dev, dtype=torch.long)
    # elapsed = wall seconds of this run (across resumes); busy = training seconds in the
    # current log interval, excluding validation and checkpoints, for an honest samples/s
    wall0, elapsed0 = time.perf_counter(), elapsed
    run_seen, busy, t_mark = 0, 0.0, time.perf_counter()
    order, order_epoch = None, -1
    lr = lr_at(recipe.schedule, recipe.solver.lr, start, total)
    net.train()
    log.start(start)
    it = start
    while it < total:
        epoch, pos = divmod(it, ipe)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(seed, epoch, n).to(dev), epoch
        idx = order[pos * bs : (pos + 1) * bs]
        xb, yb = x_all[idx], y_all[idx]
        if augment is not None:  # the whole batch, so each image gets what one process gives it
            gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * it + 1)
            xb = augment(xb.cpu(), gen).to(dev)
        weight = 1.0
        if world.active:
            # DDP averages gradients over workers, so a share of b of the batch's B images
            # is weighted b*W/B: the average is then the gradient of the whole batch's mean.
            share = world.part(idx.shape[0])
            weight = (share.stop - share.start) * world.size / idx.shape[0]
            xb, yb = xb[share], yb[share]
        lr = lr_at(recipe.schedule, recipe.solver.lr, it, total)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        logits = net(prepare(xb))
        loss = F.cross_entropy(logits, yb, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        (loss if weight == 1.0 else loss * weight).backward()
        optimizer.step()
        run_loss += loss.detach() * yb.shape[0]
        run_correct += (logits.detach().argmax(1) == yb).sum()
        run_seen += yb.shape[0]
        it += 1

        last = it == total
        if it % log_every == 0 or last:
            now = time.perf_counter()
            busy += now - t_mark
            compute += now - t_mark
            elapsed = elapsed0 + (now - wall0)
            sums = [run_loss, run_correct, run_seen]
            loss_sum, correct, seen = (
                sum_over_workers(sums, dev) if world.active else [float(v) for v in sums]
            )
            _check_finite(loss_sum, it, saved_at, log)
            log.event(
                phase="train",
                iter=it,
                epoch=it / ipe,
                loss=loss_sum / seen,
                accuracy=correct / seen,
                lr=lr,
                elapsed=elapsed,
                samples_per_s=seen / busy if busy > 0 else 0.0,
            )
            run_loss.zero_()
            run_correct.zero_()
            run_seen, busy, t_mark = 0, 0.0, time.perf_counter()
        do_val = it % val_every == 0 or last
        do_ckpt = (ckpt_every and it % ckpt_every == 0) or last or best.should_stop
        if do_val or do_ckpt:
            busy += time.perf_counter() - t_mark
            compute += time.perf_counter() - t_mark
            loss_sum = sum_over_workers([run_loss], dev)[0] if world.active else float(run_loss)
            _check_finite(loss_sum, it, saved_at, log)
        if do_val:
            val = validate(it)
            if val is not None:
                best.update(val, it, model)
                elapsed = elapsed0 + (time.perf_counter() - wall0)
                log.event(
                    phase="val",
                    iter=it,
                    epoch=it / ipe,
                    lr=lr,
                    elapsed=elapsed,
                    train_seconds=round(compute, 4),  # optimisation only, as in model.json
                    **val,
                )
                if on_validation is not None:
                    on_validation(it, val)
        if do_ckpt:
            elapsed = elapsed0 + (time.perf_counter() - wall0)
            checkpoint(it)
            saved_at = it
        if do_val or do_ckpt:
            t_mark = time.perf_counter()
        if best.should_stop:
            log.text(f"early stop at iteration {it}: no improvement in {best.patience} validations")
            break
    log.finish()

    # The artifact: best validation weights when selecting, else the final ones.
    if best.state is not None:
        model.load_state_dict(best.state)
    from digitlab.data.dataset import load_split

    test = score(load_split("test"))
    val_final = validate(it)
    metrics: dict[str, Any] = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "iterations": it,
        "epochs": it / ipe,
        "train_seconds": round(compute, 3),  # optimisation steps only
        "wall_seconds": round(elapsed, 3),  # including validation and checkpoints
    }
    if world.active:
        metrics["workers"] = world.size
    if val_final is not None:
        metrics.update(val_accuracy=val_final["accuracy"], val_loss=val_final["loss"])
    if best.metric:
        metrics.update(selected_by=best.metric, selected_iter=best.iteration)
    if world.is_main:
        meta = {
            "architecture": recipe.model.name,
            "model_kwargs": dict(recipe.model.options),
            "normalization": [norm.shift, norm.scale],
            "classes": list(range(10)) + (["not-a-digit"] if classes == 11 else []),
            "recipe": recipe.model_dump(mode="json"),
            "metrics": metrics,
            "data_digests": digests,
            "trained_on": train_ds.name,
        }
        save_artifact(run_dir, model.eval(), meta)
    log.event(
        phase="test",
        iter=it,
        epoch=it / ipe,
        elapsed=elapsed,
        loss=test["loss"],
        accuracy=test["accuracy"],
        lr=lr,
    )
    log.text(
        f"done: {it} iterations, {compute:.1f}s of training ({elapsed:.1f}s with validation); "
        f"test accuracy {test['accuracy']:.4%}"
    )
    log.close()
    return RunResult(run_dir, metrics, it, world.rank)
