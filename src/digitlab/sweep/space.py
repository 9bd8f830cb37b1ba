"""What a sweep varies: recipe fields with listed values or numeric ranges, parsed from the
command line (``solver.lr=0.15,0.3,...,1.5``, ``solver.lr=0.01:2.0:log``) and turned back
into the ``--set`` overrides of one trial."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from digitlab.errors import DigitlabError
from digitlab.recipes import _parse_value

MAX_TRIALS = 10_000


@dataclass(frozen=True)
class Axis:
    """One swept recipe field: listed values (a grid, or an Optuna choice) or a numeric range."""

    key: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def describe(self) -> str:
        if not self.is_range:
            return f"{self.key}={','.join(map(format_value, self.values))}"
        extra = ":log" if self.log else (f":{format_value(self.step)}" if self.step else "")
        return f"{self.key}={format_value(self.low)}:{format_value(self.high)}{extra}"

    def probes(self) -> tuple[Any, ...]:
        """Values that show whether the recipe accepts this axis: the list, or both ends."""
        return self.values if not self.is_range else (self.low, self.high)


def format_value(value: Any) -> str:
    """A value as TOML, the form ``--set`` reads back (0.15, 256, true, "adam", [24, 28])."""
    import tomli_w

    if value is None:
        return "none"
    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


def show_value(value: Any) -> str:
    """A value for people: strings bare, floats to 4 significant digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() and abs(value) < 1e4 else f"{value:.4g}"
    return format_value(value)


def _split_key(text: str, flag: str, form: str) -> tuple[str, str]:
    key, sep, rest = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not rest.strip() or not all(p.strip() for p in parts):
        raise DigitlabError(f"{flag} {text!r}: expected {form}")
    return key, rest.strip()


def _split_list(text: str) -> list[str]:
    """Split at commas outside brackets and quotes, so [24, 28] stays one value."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return items


def _number(text: str) -> Decimal | None:
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _is_int(text: str) -> bool:
    return _number(text) is not None and not any(c in text.lower() for c in ".e")


def _expand_ellipsis(items: list[str], where: str) -> list[str]:
    """``A,B,...,Z`` counts from A to Z in steps of B-A; ``A,B,C,...,Z`` with a constant ratio
    (32,64,128,...,512) multiplies instead. Z must be reached exactly."""
    if "..." not in items:
        return items
    if items.count("...") > 1 or items.index("...") != len(items) - 2 or len(items) < 4:
        raise DigitlabError(f"{where}: write '...' as A,B,...,Z (two or more values, ..., last)")
    head, last = items[:-2], items[-1]
    nums = [_number(t) for t in [*head, last]]
    if any(n is None for n in nums):
        raise DigitlabError(f"{where}: '...' needs numbers on both sides")
    *start, end = nums
    diffs = {b - a for a, b in itertools.pairwise(start)}
    ratios = {b / a for a, b in itertools.pairwise(start) if a != 0}
    if len(diffs) == 1 and next(iter(diffs)) != 0:
        step = next(iter(diffs))
        grow: Callable[[Decimal], Decimal] = lambda v: v + step  # noqa: E731
    elif len(start) >= 3 and len(ratios) == 1 and next(iter(ratios)) > 0 and 0 not in start:
        ratio = next(iter(ratios))
        grow = lambda v: v * ratio  # noqa: E731
    else:
        raise DigitlabError(
            f"{where}: the values before '...' must step evenly (A,B,...: B-A each time) "
            "or grow by one ratio (A,B,C,...: three values)"
        )
    values, v, rising = [], start[0], start[1] > start[0]
    while v <= end if rising else v >= end:
        if len(values) == MAX_TRIALS:
            raise DigitlabError(f"{where}: counts more than {MAX_TRIALS:,} values")
        values.append(v)
        v = grow(v)
    if not values or values[-1] != end:
        raise DigitlabError(f"{where}: counting from {head[0]} does not land on {last}")
    as_int = all(_is_int(t) for t in [*head, last])
    return [str(int(d)) if as_int else _decimal_text(d) for d in values]


def _decimal_text(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return text if "." in text else text + ".0"


def _typed_values(items: list[str], where: str) -> tuple[Any, ...]:
    if any(not t for t in items):
        raise DigitlabError(f"{where}: empty value in the list")
    values = tuple(_parse_value(t) for t in items)
    if len({format_value(v) for v in values}) != len(values):
        raise DigitlabError(f"{where}: a value is listed twice")
    return values


def parse_grid(text: str) -> Axis:
    """``KEY=V1,V2,...`` (also ``A,B,...,Z``) as an :class:`Axis` of listed values."""
    key, rest = _split_key(text, "--grid", "KEY=V1,V2,... e.g. solver.lr=0.1,0.5,1.0")
    where = f"--grid {text}"
    return Axis(key, _typed_values(_expand_ellipsis(_split_list(rest), where), where))


def parse_range(text: str) -> Axis:
    """``KEY=LO:HI``, ``KEY=LO:HI:log``, ``KEY=LO:HI:STEP`` or a choice ``KEY=A,B,C``.

    Numbers are integers when both ends are written as integers (32:512), else floats.
    """
    form = "KEY=LO:HI[:log|:STEP] or KEY=A,B,C e.g. solver.lr=0.01:2.0:log"
    key, rest = _split_key(text, "--range", form)
    where = f"--range {text}"
    items = _split_list(rest)
    if len(items) > 1 or ":" not in rest:
        values = _typed_values(_expand_ellipsis(items, where), where)
        if len(values) < 2:
            raise DigitlabError(f"{where}: a choice needs two or more values; or write LO:HI")
        return Axis(key, values)
    parts = [p.strip() for p in rest.split(":")]
    if len(parts) not in (2, 3):
        raise DigitlabError(f"{where}: expected {form}")
    low, high = (_number(p) for p in parts[:2])
    if low is None or high is None:
        raise DigitlabError(f"{where}: LO and HI must be numbers")
    if low >= high:
        raise DigitlabError(f"{where}: LO must be below HI")
    integer = _is_int(parts[0]) and _is_int(parts[1])
    log, step = False, None
    if len(parts) == 3:
        if parts[2].lower() == "log":
            log = True
            if low <= 0:
                raise DigitlabError(f"{where}: a log range needs LO > 0")
        else:
            s = _number(parts[2])
            if s is None or s <= 0:
                raise DigitlabError(f"{where}: the third part is 'log' or a step > 0")
            if integer and not _is_int(parts[2]):
                raise DigitlabError(f"{where}: an integer range needs an integer step")
            step = int(s) if integer else float(s)
    cast = int if integer else float
    return Axis(key, low=cast(low), high=cast(high), log=log, step=step, integer=integer)


def overrides_for(params: dict[str, Any]) -> list[str]:
    """A trial's settings as ``--set`` strings."""
    return [f"{k}={format_value(v)}" for k, v in params.items()]


def grid_points(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """Every combination, the first axis changing slowest."""
    keys = [a.key for a in axes]
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(a.values for a in axes))
    ]


def short_key(key: str, axes: Sequence[Axis]) -> str:
    """The field name alone (``lr``) when no other swept key ends the same way."""
    last = key.rsplit(".", 1)[-1]
    return last if sum(a.key.rsplit(".", 1)[-1] == last for a in axes) == 1 else key
