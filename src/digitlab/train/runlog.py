"""What a run writes while it trains: metrics.jsonl, train.log and a progress bar.

``metrics.jsonl`` holds one JSON event per line — phase (train/val/test), iter, epoch, loss,
accuracy, lr, elapsed seconds and, for training, samples/s — flushed as it goes so plots and
reports can read a run that is still in progress.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError
from digitlab.fileio import write_text_atomic

METRICS = "metrics.jsonl"
TEXT_LOG = "train.log"


NUMERIC = ("iter", "epoch", "elapsed", "loss", "accuracy", "lr")  # what plots compute with


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete events of a run. A half-written last line of a live run is skipped, and
    so is any line that is not an event object with numbers where numbers belong."""
    path = Path(run_dir) / METRICS
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DigitlabError(f"{path}: not a metrics file (not UTF-8 text)") from None
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and all(
            isinstance(event.get(k, 0), int | float) and not isinstance(event.get(k), bool)
            for k in NUMERIC
        ):
            events.append(event)
    return events


def tested_at(run_dir: str | Path) -> int | None:
    """The iteration of the run's last test event: the run finished there (None: never)."""
    if not (Path(run_dir) / METRICS).is_file():
        return None
    tests = [e["iter"] for e in read_metrics(run_dir) if e.get("phase") == "test"]
    return tests[-1] if tests else None


class RunLog:
    """Event file, text log and (on a terminal) a Rich progress bar for one run."""

    def __init__(
        self,
        run_dir: Path,
        total: int,
        progress: bool | None = None,
        echo: bool = True,
        tensorboard: bool = False,
    ) -> None:
        self._tb = _tensorboard_writer(run_dir) if tensorboard else None  # fails before opening
        self.run_dir = run_dir
        self.echo = echo
        self.total = total
        self._metrics = open(run_dir / METRICS, "a")  # noqa: SIM115
        self._text = open(run_dir / TEXT_LOG, "a")  # noqa: SIM115
        self._show = sys.stderr.isatty() if progress is None else progress
        self._bar = None
        self._task = None
        self._last_val = ""

    def truncate_after(self, iteration: int) -> None:
        """Drop events a killed run wrote after its last checkpoint, so a resume repeats them,
        and the test event of a finished run that is extended (its model is replaced)."""
        self._metrics.close()
        kept = [
            e
            for e in read_metrics(self.run_dir)
            if e.get("iter", 0) <= iteration and e.get("phase") != "test"
        ]
        write_text_atomic(self.run_dir / METRICS, "".join(json.dumps(e) + "\n" for e in kept))
        self._metrics = open(self.run_dir / METRICS, "a")  # noqa: SIM115

    def text(self, message: str, echo: bool = True) -> None:
        """A line in train.log, echoed on stderr unless ``echo`` is False (an error the CLI
        prints itself)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._text.write(f"{stamp} {message}\n")
        self._text.flush()
        if not echo:
            return
        if self._bar is not None:
            self._bar.console.print(message)
        elif self.echo:
            print(message, file=sys.stderr)

    def start(self, iteration: int) -> None:
        if not self._show:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            "{task.fields[status]}",
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=self.total, completed=iteration, status="")

    def event(self, **event: Any) -> None:
        self._metrics.write(json.dumps(event) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            _mirror_to_tensorboard(self._tb, event)
        phase = event["phase"]
        if phase == "val":
            self._last_val = f"val loss {event['loss']:.4f} acc {event['accuracy']:.2%}"
            self._text.write(
                f"iter {event['iter']} val loss {event['loss']:.4f} "
                f"accuracy {event['accuracy']:.4f}\n"
            )
            if self._bar is None and self._show is False and self.echo:
                print(f"iter {event['iter']}/{self.total} {self._last_val}", file=sys.stderr)
        elif phase == "train":
            self._text.write(
                f"iter {event['iter']} lr {event['lr']:.6g} loss {event['loss']:.4f} "
                f"accuracy {event['accuracy']:.4f} {event['samples_per_s']:.0f} samples/s\n"
            )
            if self._bar is not None:
                status = (
                    f"loss {event['loss']:.4f} acc {event['accuracy']:.2%} lr {event['lr']:.3g} "
                    f"{event['samples_per_s']:,.0f}/s {self._last_val}"
                )
                self._bar.update(self._task, completed=event["iter"], status=status)
        self._text.flush()

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self) -> None:
        self.finish()
        if self._tb is not None:
            self._tb.close()
        self._metrics.close()
        self._text.close()


TENSORBOARD_DIR = "tensorboard"


def _tensorboard_writer(run_dir: Path) -> Any:
    """A SummaryWriter into RUN/tensorboard/ (``tensorboard --logdir RUN`` shows it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DigitlabError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter(str(run_dir / TENSORBOARD_DIR))


def _mirror_to_tensorboard(writer: Any, event: dict[str, Any]) -> None:
    """Each number of an event as a scalar ``phase/field`` at its iteration."""
    for key in ("loss", "accuracy", "lr", "samples_per_s"):
        if isinstance(event.get(key), int | float):
            writer.add_scalar(f"{event['phase']}/{key}", event[key], event["iter"])
    writer.flush()


class SilentLog:
    """The run log of workers other than rank 0: rank 0 alone writes the run folder."""

    def truncate_after(self, iteration: int) -> None: ...

    def text(self, message: str, echo: bool = True) -> None: ...

    def start(self, iteration: int) -> None: ...

    def event(self, **event: Any) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...
