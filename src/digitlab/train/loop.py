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
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_partial_files,
    save_checkpoint,
)
from digitlab.train.runlog import RunLog

if TYPE_CHECKING:
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
    if recipe.data.negatives:
        train = train.with_negatives(recipe.data.negatives, seed=2 * recipe.seed + 1)
        if val is not None:
            val = val.with_negatives(max(1, recipe.data.negatives // 5), seed=2 * recipe.seed + 2)
    return train, val, digests


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


def train(
    recipe: Recipe,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool | None = None,
    tensorboard: bool = False,
) -> RunResult:
    """Train ``recipe`` into ``run_dir`` (or continue it with ``resume``); returns the result.

    The run folder gets recipe.toml, metrics.jsonl, train.log, checkpoints/ and the final
    model artifact (the best validation model when the recipe selects one); with
    ``tensorboard`` every event is mirrored into RUN/tensorboard/ as well.
    """
    import torch
    import torch.nn.functional as F

    from digitlab.artifact import save_artifact
    from digitlab.evaluate import batched_logits, evaluate_model
    from digitlab.models import create_model, get_entry
    from digitlab.models.registry import Normalization
    from digitlab.recipes import recipe_to_toml
    from digitlab.train.schedules import lr_at

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    ckpt_file = latest_checkpoint(run_dir) if resume else None
    if not resume and (run_dir / "metrics.jsonl").exists():
        raise DigitlabError(f"{run_dir} already holds a run; use --resume or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    prune_partial_files(run_dir)
    write_text_atomic(run_dir / "recipe.toml", recipe_to_toml(recipe))

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
    ipe = math.ceil(n / bs)
    total = total_iterations(recipe, ipe)
    best = _Best(recipe.train.select_best, recipe.train.early_stop_patience)
    log = RunLog(run_dir, total=total, progress=progress, tensorboard=tensorboard)

    start, elapsed, compute = 0, 0.0, 0.0
    if ckpt_file is not None:
        ck = load_checkpoint(ckpt_file)
        model.load_state_dict(ck["model_state"])
        optimizer.load_state_dict(ck["optim_state"])
        torch.set_rng_state(ck["rng_state"])
        info = ck["info"]
        start, elapsed = int(info["iteration"]), float(info["elapsed"])
        compute = float(info.get("compute", 0.0))
        best.value, best.iteration, best.stale = (
            info["best_value"],
            info["best_iter"],
            info["stale"],
        )
        if ck["extra"]:
            best.state = {k[5:]: v.to(dev) for k, v in ck["extra"].items() if k.startswith("best.")}
        log.truncate_after(start)
        log.text(f"resumed from {ckpt_file.name} at iteration {start} of {total}")
    elif resume:
        log.text("no checkpoint found; starting from iteration 0")
    if start >= total:
        log.text(f"nothing to do: the run already has {start} iterations (asked for {total})")

    def prepare(xb: torch.Tensor) -> torch.Tensor:
        return norm.apply(xb)

    def validate(it: int) -> dict[str, float] | None:
        if val_ds is None:
            return None
        model.eval()
        vx, vy = (t.to(dev) for t in val_ds.tensors())
        logits = batched_logits(model, vx, prepare, recipe.data.eval_batch_size)
        model.train()
        return {
            "loss": float(F.cross_entropy(logits, vy)),
            "accuracy": float((logits.argmax(1) == vy).float().mean()),
        }

    def checkpoint(it: int) -> None:
        extra = {f"best.{k}": v for k, v in (best.state or {}).items()}
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
    model.train()
    log.start(start)
    it = start
    while it < total:
        epoch, pos = divmod(it, ipe)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(seed, epoch, n).to(dev), epoch
        idx = order[pos * bs : (pos + 1) * bs]
        xb, yb = x_all[idx], y_all[idx]
        if augment is not None:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * it + 1)
            xb = augment(xb.cpu(), gen).to(dev)
        lr = lr_at(recipe.schedule, recipe.solver.lr, it, total)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        logits = model(prepare(xb))
        loss = F.cross_entropy(logits, yb, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
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
            log.event(
                phase="train",
                iter=it,
                epoch=it / ipe,
                loss=float(run_loss) / run_seen,
                accuracy=float(run_correct) / run_seen,
                lr=lr,
                elapsed=elapsed,
                samples_per_s=run_seen / busy if busy > 0 else 0.0,
            )
            run_loss.zero_()
            run_correct.zero_()
            run_seen, busy, t_mark = 0, 0.0, now
        do_val = it % val_every == 0 or last
        do_ckpt = (ckpt_every and it % ckpt_every == 0) or last or best.should_stop
        if do_val or do_ckpt:
            busy += time.perf_counter() - t_mark
            compute += time.perf_counter() - t_mark
        if do_val:
            val = validate(it)
            if val is not None:
                best.update(val, it, model)
                elapsed = elapsed0 + (time.perf_counter() - wall0)
                log.event(phase="val", iter=it, epoch=it / ipe, lr=lr, elapsed=elapsed, **val)
        if do_ckpt:
            elapsed = elapsed0 + (time.perf_counter() - wall0)
            checkpoint(it)
        if do_val or do_ckpt:
            t_mark = time.perf_counter()
        if best.should_stop:
            log.text(f"early stop at iteration {it}: no improvement in {best.patience} validations")
            break
    log.finish()

    # The artifact: best validation weights when selecting, else the final ones.
    if best.state is not None:
        model.load_state_dict(best.state)
    model.eval()
    from digitlab.data.dataset import load_split

    test = evaluate_model(model, load_split("test"), prepare, recipe.data.eval_batch_size)
    val_final = validate(it)
    metrics: dict[str, Any] = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "iterations": it,
        "epochs": it / ipe,
        "train_seconds": round(compute, 3),  # optimisation steps only
        "wall_seconds": round(elapsed, 3),  # including validation and checkpoints
    }
    if val_final is not None:
        metrics.update(val_accuracy=val_final["accuracy"], val_loss=val_final["loss"])
    if best.metric:
        metrics.update(selected_by=best.metric, selected_iter=best.iteration)
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
    save_artifact(run_dir, model, meta)
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
    return RunResult(run_dir, metrics, it)
