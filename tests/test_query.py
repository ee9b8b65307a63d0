"""resolver.edge.query: query parameters read and checked, refusals as 422 naming the parameter (pure logic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pytest
from starlette.requests import Request

from resolver.edge.problems import Problem
from resolver.edge.query import choice_param, flag_param, int_param, region_param

Mode = Literal["all_or_nothing", "good_rows"]
MODES: tuple[Mode, ...] = ("all_or_nothing", "good_rows")
KINDS = ("green", "organic", "gi")


def _request(query: str) -> Request:
    return Request({"type": "http", "query_string": query.encode(), "headers": []})


def _refused(query: str, read: Callable[[Request], object]) -> tuple[int, str, str, dict[str, object]]:
    """(status, code, detail, extra) of the Problem that `read` raises for a request with `query`."""
    with pytest.raises(Problem) as raised:
        read(_request(query))
    return raised.value.status, raised.value.code, raised.value.detail, raised.value.extra


@pytest.mark.parametrize(
    ("query", "value"),
    [
        pytest.param("", "all_or_nothing", id="absent-the-default"),
        pytest.param("mode=good_rows", "good_rows", id="given"),
    ],
)
def test_choice_param(query: str, value: str) -> None:
    assert choice_param(_request(query), "mode", MODES, "all_or_nothing") == value


@pytest.mark.parametrize("query", ["mode=", "mode=GOOD_ROWS", "mode=x"])
def test_choice_param_of_two_refuses_others(query: str) -> None:
    refusal = _refused(query, lambda r: choice_param(r, "mode", MODES, "all_or_nothing"))

    assert refusal == (
        422,
        "invalid_input",
        "query parameter mode must be all_or_nothing or good_rows",
        {"field": "mode"},
    )


def test_choice_param_of_more_lists_them() -> None:
    refusal = _refused("kind=x", lambda r: choice_param(r, "kind", KINDS))

    assert refusal == (
        422,
        "invalid_input",
        "query parameter kind must be one of green, organic, gi",
        {"field": "kind"},
    )
    assert choice_param(_request("kind=gi"), "kind", KINDS) == "gi"


@pytest.mark.parametrize(
    ("query", "value"),
    [
        pytest.param("", False, id="absent"),
        pytest.param("dry_run=", False, id="empty"),
        pytest.param("dry_run=0", False, id="zero"),
        pytest.param("dry_run=No", False, id="no"),
        pytest.param("dry_run=1", True, id="one"),
        pytest.param("dry_run=%20TRUE%20", True, id="true-spaced"),
        pytest.param("dry_run=yes", True, id="yes"),
    ],
)
def test_flag_param(query: str, value: bool) -> None:
    assert flag_param(_request(query), "dry_run") is value


def test_flag_param_refuses_others() -> None:
    refusal = _refused("dry_run=maybe", lambda r: flag_param(r, "dry_run"))

    assert refusal == (422, "invalid_input", "query parameter dry_run must be 1 or 0", {"field": "dry_run"})


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        pytest.param("limit=-1", "query parameter limit must be an integer", id="negative"),
        pytest.param("limit=%EF%BC%93", "query parameter limit must be an integer", id="fullwidth-digit"),
        pytest.param("limit=" + "9" * 19, "query parameter limit must be an integer", id="too-long"),
        pytest.param("limit=0", "query parameter limit must be between 1 and 500", id="below"),
        pytest.param("limit=501", "query parameter limit must be between 1 and 500", id="above"),
    ],
)
def test_int_param_refusals(query: str, detail: str) -> None:
    refusal = _refused(query, lambda r: int_param(r, "limit", default=100, low=1, high=500))

    assert refusal == (422, "invalid_input", detail, {"field": "limit"})


def test_int_param() -> None:
    assert int_param(_request(""), "limit", default=100, low=1, high=500) == 100
    assert int_param(_request("limit="), "limit", default=100, low=1, high=500) == 100
    assert int_param(_request("limit=500"), "limit", default=100, low=1, high=500) == 500


@pytest.mark.parametrize("query", ["", "region=63012", "region=6301210", "region=%EF%BC%96%E3%80%80"])
def test_region_param_refusals(query: str) -> None:
    refusal = _refused(query, region_param)

    assert refusal == (
        422, "invalid_input", "query parameter region must be a 6-digit GB/T 2260 region code", {"field": "region"}
    )  # fmt: skip


def test_region_param() -> None:
    assert region_param(_request("region=%20630121%20")) == "630121"
