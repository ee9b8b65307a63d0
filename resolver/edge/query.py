"""Query parameters: read and checked, with Problem 422 `invalid_input` naming the parameter otherwise."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TypeVar

from starlette.requests import Request

from resolver.edge.problems import invalid

T = TypeVar("T", bound=str)


def flag_param(request: Request, name: str) -> bool:
    """A boolean query parameter: 1/true/yes or 0/false/no (absent: false); Problem 422 otherwise."""
    value = request.query_params.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise invalid(f"query parameter {name} must be 1 or 0", field=name)


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; Problem 422 otherwise."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise invalid(f"query parameter {name} must be an integer", field=name)
    value = int(text)
    if not low <= value <= high:
        raise invalid(f"query parameter {name} must be between {low} and {high}", field=name)
    return value


def region_param(request: Request, name: str = "region") -> str:
    """A required region code in the query string (6 digits); Problem 422 otherwise."""
    code = request.query_params.get(name, "").strip()
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        raise invalid(f"query parameter {name} must be a 6-digit GB/T 2260 region code", field=name)
    return code


def choice_param(request: Request, name: str, choices: Sequence[T], default: T | None = None) -> T:
    """One of `choices`, spelled exactly; `default` when the parameter is absent. Problem 422 otherwise (also when
    it is absent without a default, or given empty: a caller for whom empty means absent checks that first)."""
    value = request.query_params.get(name)
    if value is None and default is not None:
        return default
    for choice in choices:
        if value == choice:
            return choice
    listed = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
    raise invalid(f"query parameter {name} must be {listed}", field=name)


def date_param(request: Request, name: str, *, earliest: dt.date, latest: dt.date) -> dt.date:
    """A required date in the query string, YYYY-MM-DD, within [earliest, latest]; Problem 422 otherwise."""
    text = request.query_params.get(name, "")
    try:
        if len(text) != 10:
            raise ValueError(text)
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise invalid(f"query parameter {name} must be a date, YYYY-MM-DD", field=name) from None
    if not earliest <= day <= latest:
        raise invalid(f"query parameter {name} must be between {earliest} and {latest}", field=name)
    return day


def period_params(request: Request, *, earliest: dt.date, latest: dt.date) -> tuple[dt.date, dt.date]:
    """The whole days `from` .. `to` (both required, `to` not before `from`); Problem 422 otherwise."""
    start = date_param(request, "from", earliest=earliest, latest=latest)
    end = date_param(request, "to", earliest=earliest, latest=latest)
    if end < start:
        raise invalid("to is before from", field="to")
    return start, end
