"""The consumer pages: server-rendered Chinese HTML, readable without JavaScript."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import jinja2
import markupsafe

from cache.store import Scans
from codegen.format import CodeType
from resolver.categories import CERTIFICATION_LABELS, PRODUCER_KIND_LABELS
from resolver.edge.problems import Problem
from resolver.scan.documents import CHINA_TZ

EVENT_LABELS = {
    "commissioning": "赋码登记",
    "inspection": "质量检测",
    "market_entry": "市场入场",
    "trade": "交易流通",
    "recall": "召回",
    "labelling": "包装赋码",
}
BASIS_LABELS = {"self_test": "自检合格", "commissioned_test": "委托检测合格", "quality_control": "内部质量控制合格"}


def _datetime(value: str | None) -> str:
    if not value:
        return ""
    return dt.datetime.fromisoformat(value).astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("resolver", "templates"),
    autoescape=True,
    undefined=jinja2.ChainableUndefined,
    auto_reload=False,
)
_env.filters["datetime"] = _datetime
_code_page = _env.get_template("code.html")
_problem_page = _env.get_template("problem.html")
_product_page = _env.get_template("product.html")


SCANS_MARKER = "<!--tracecode:scans-->"
CODE_MARKER = "<!--tracecode:code-->"
TYPE_MARKER = "<!--tracecode:type-->"
_HOLES = {SCANS_MARKER: 0, CODE_MARKER: 1, TYPE_MARKER: 2}  # where each answer's own values go (see fill)
_HOLE = re.compile("|".join(map(re.escape, _HOLES)))
_SCANS_WARNING = (
    '<div class="status warn" role="alert">⚠ 该追溯码短时间内在多个地点被扫描，可能被复制，'
    "请注意辨别真伪，可向当地农业农村部门咨询。</div>"
)


def with_scans(page: str, scans: Scans) -> str:
    """The rendered page with this request's scan statistics in place of SCANS_MARKER."""
    first = f"，首次查询于 {_datetime(scans.first_at)}" if scans.first_at else ""
    line = f'<p class="muted">本追溯码已被查询 {scans.count} 次{first}。若首次查询并非您本人，请注意辨别。</p>'
    return page.replace(SCANS_MARKER, (_SCANS_WARNING if scans.is_suspicious else "") + line, 1)


def render_document(document: dict[str, Any]) -> str:
    """The consumer page of a document (resolver.scan.documents: without its code's members), with markers where
    the code, its type and the scan statistics go (see page_parts)."""
    certificate = document.get("certificate") or {}
    return _code_page.render(
        d=document,
        scans_marker=markupsafe.Markup(SCANS_MARKER),
        code=markupsafe.Markup(CODE_MARKER),
        type_label=markupsafe.Markup(TYPE_MARKER),
        kind_label=PRODUCER_KIND_LABELS.get(document["producer"]["kind"], ""),
        basis_label=BASIS_LABELS.get(certificate.get("basis", ""), ""),
        cert_labels=CERTIFICATION_LABELS,
        event_labels=EVENT_LABELS,
    )


def page_parts(document: dict[str, Any]) -> tuple[bytes | int, ...]:
    """The consumer page of a document, encoded, in parts: bytes, and the holes that `fill` fills, by number."""
    page = render_document(document)
    parts: list[bytes | int] = []
    at = 0
    for marker in _HOLE.finditer(page):
        parts += (page[at : marker.start()].encode(), _HOLES[marker.group()])
        at = marker.end()
    parts.append(page[at:].encode())
    return tuple(parts)


def fill(parts: tuple[bytes | int, ...], code: str, code_type: CodeType, scans: Scans) -> bytes:
    """The page of `code` (a canonical code: digits, or the long form's letters, digits and dots, nothing to
    escape) from its document's `page_parts`, with this request's scan statistics."""
    values = (with_scans(SCANS_MARKER, scans).encode(), code.encode(), _TYPE_LABELS[code_type])
    return b"".join(part if isinstance(part, bytes) else values[part] for part in parts)


_TYPE_LABELS = {code_type: code_type.label.encode() for code_type in CodeType}


def render_problem(problem: Problem) -> str:
    return _problem_page.render(
        title=problem.title, detail=problem.detail or problem.title, code=problem.code, status=problem.status
    )


STATUS_LABELS = {"active": "正常", "expired": "已过保质期", "recalled": "已召回"}


def render_product(gtin: str, products: list[dict[str, Any]]) -> str:
    """The product page of a GTIN: each product carrying it (resolver.scan.gs1), its batches recalled ones first."""
    return _product_page.render(
        gtin=gtin, products=products, cert_labels=CERTIFICATION_LABELS, status_labels=STATUS_LABELS
    )
