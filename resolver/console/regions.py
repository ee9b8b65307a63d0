"""The regulator's page of a region, `/regions/{code}`: coverage of each county against the 80 % line as
an inline SVG bar chart, the certified products that are not traced (counts per county), and the recent
recalls. Server-rendered Chinese HTML without JavaScript; public, since it shows aggregate figures only
(the detailed list of unlisted certifications is the API's, for the region's regulator).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from resolver.api.hooks import (
    COUNTED_KINDS,
    COVERAGE_LINE,
    TRACED_WINDOW_MONTHS,
    CountyCoverage,
    RegionCoverage,
    region_coverage,
    region_or_404,
    unlisted_counts,
)
from resolver.db import POSTGRES_AWAY_ERRORS
from resolver.edge.problems import Problem, store_unavailable
from resolver.edge.responses import PageResponse
from resolver.scan import pages
from resolver.scan.documents import CHINA_TZ
from resolver.state import worker

# --- queries -------------------------------------------------------------------------------------

RECENT_RECALLS = """
SELECT b.trace_code, b.recall_reason, b.recalled_at, pd.name AS product_name, p.name AS producer_name,
       r.name AS region_name
  FROM batches b
  JOIN producers p ON p.id = b.producer_id
  JOIN regions r ON r.code = p.region_code
  JOIN products pd ON pd.id = b.product_id
 WHERE b.status = 'recalled' AND b.recalled_at >= now() - make_interval(days => $2)
   AND (r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)
 ORDER BY b.recalled_at DESC
 LIMIT $3
"""

# --- the page ------------------------------------------------------------------------------------

RECALL_WINDOW_DAYS = 90
RECALLS_SHOWN = 20
PAGE_MAX_AGE_S = 60  # aggregate figures: a minute old is fresh enough, and a busy page costs Postgres little

# Chart geometry, in SVG user units (the chart scales to the page width).
CHART_WIDTH = 640
LABEL_WIDTH = 150
BAR_X = 160
BAR_WIDTH = 380
ROW_HEIGHT = 28
BAR_HEIGHT = 16
CHART_TOP = 24
CHART_BOTTOM = 8

KIND_NAMES = {"enterprise": "企业", "cooperative": "农民专业合作社"}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("resolver", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    auto_reload=False,
)
_region_page = _env.get_template("region.html")


@dataclass(frozen=True, slots=True)
class Bar:
    """One county's row of the chart."""

    code: str
    label: str
    y: int
    width: float
    percent: str
    detail: str
    css_class: str
    meets_line: bool
    ratio: float | None
    registered: int
    traced: int
    unlisted: int


def _percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f}%"


def _bars(counties: list[CountyCoverage], unlisted: dict[str, int]) -> list[Bar]:
    bars = []
    for i, county in enumerate(counties):
        coverage = county.coverage
        ratio = coverage.ratio
        if ratio is None:
            css_class, detail = "none", "无登记主体"
        else:
            css_class = "meets" if coverage.meets_line else "below"
            detail = f"{coverage.traced}/{coverage.registered}"
        bars.append(
            Bar(
                code=county.code,
                label=f"{county.name}（本级）" if county.is_direct else county.name,
                y=CHART_TOP + i * ROW_HEIGHT,
                width=round((ratio or 0.0) * BAR_WIDTH, 1),
                percent=_percent(ratio),
                detail=detail,
                css_class=css_class,
                meets_line=coverage.meets_line,
                ratio=ratio,
                registered=coverage.registered,
                traced=coverage.traced,
                unlisted=unlisted.get(county.code, 0),
            )
        )
    return bars


def render_region(
    coverage: RegionCoverage, unlisted: dict[str, int], recalls: list[asyncpg.Record], *, now: dt.datetime
) -> str:
    bars = _bars(coverage.counties, unlisted)
    return _region_page.render(
        region=coverage,
        total=coverage.total,
        total_percent=_percent(coverage.total.ratio),
        bars=bars,
        chart={
            "width": CHART_WIDTH,
            "height": CHART_TOP + len(bars) * ROW_HEIGHT + CHART_BOTTOM,
            "label_width": LABEL_WIDTH,
            "bar_x": BAR_X,
            "bar_width": BAR_WIDTH,
            "bar_height": BAR_HEIGHT,
            "row_height": ROW_HEIGHT,
            "line_x": BAR_X + float(COVERAGE_LINE) * BAR_WIDTH,
        },
        line_percent=f"{float(COVERAGE_LINE) * 100:.0f}%",
        counted=("、".join(KIND_NAMES[k] for k in COUNTED_KINDS)),
        window_months=TRACED_WINDOW_MONTHS,
        unlisted_total=sum(unlisted.values()),
        unlisted_rows=[b for b in bars if b.unlisted],
        recalls=[_recall(row) for row in recalls],
        recall_days=RECALL_WINDOW_DAYS,
        as_of=now.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M"),
    )


def _recall(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "code": row["trace_code"],
        "product": row["product_name"],
        "producer": row["producer_name"],
        "region": row["region_name"],
        "reason": row["recall_reason"],
        "at": row["recalled_at"].astimezone(CHINA_TZ).strftime("%Y-%m-%d"),
    }


async def region_page(request: Request) -> Response:
    """GET /regions/{code} (public)"""
    pool = worker(request).pool
    try:
        try:
            region = await region_or_404(pool, request.path_params["code"])
            async with pool.acquire() as conn:
                coverage = await region_coverage(conn, region)
                unlisted = await unlisted_counts(conn, region["code"])
                recalls = await conn.fetch(RECENT_RECALLS, region["code"], RECALL_WINDOW_DAYS, RECALLS_SHOWN)
        except POSTGRES_AWAY_ERRORS as exc:  # here, not the app's handler: the answer is a page
            raise store_unavailable() from exc
    except Problem as problem:
        return PageResponse(pages.render_problem(problem), status_code=problem.status, headers=problem.headers)
    html = render_region(coverage, unlisted, recalls, now=dt.datetime.now(CHINA_TZ))
    return PageResponse(html, headers={"Cache-Control": f"public, max-age={PAGE_MAX_AGE_S}"})


ROUTES: list[BaseRoute] = [Route("/regions/{code}", region_page, methods=["GET"])]
