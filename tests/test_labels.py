"""Package labels: bulk issuance over the API and the command line, as ranges; the PDF sheet."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import random
import secrets
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pypdfium2
import pytest
import zxingcpp

from codegen.digitallink import digital_link_path
from codegen.format import CodeType, compose, group, is_valid, region_of, type_of
from codegen.kernels import block_to_strings, issue_block
from codegen.permute import derive_round_keys
from resolver import queries
from resolver.api import labels
from resolver.api.issuer import CodeIssuer
from resolver.api.labels import LabelBatch
from resolver.api.labelsheet import LABEL_HEIGHT_MM, LABEL_WIDTH_MM, MIN_MODULE_MM, LabelSheet
from resolver.edge.problems import Problem
from resolver.state import app_worker
from tests.conftest import Service
from tests.helpers import TRACECODE, register_batch, register_producer, run_tracecode, subprocess_env

PUBLIC_URL = "https://trace.example.cn"  # tests.conftest's settings
# pool reset, periodic scan flush, asyncpg's look-up of a statement's types (once per connection)
HOUSEKEEPING = ("SELECT pg_advisory_unlock_all()", "\nINSERT INTO scan_counts")
ASYNCPG_TYPE_LOOKUP = ("typeinfo_tree", "'jit'")  # asyncpg's look-up of a statement's types, once per connection
RENDER_SCALE = 4.0  # 288 dpi: a 0.75 mm QR module is 8 pixels
POINTS_PER_MM = 72 / 25.4
GTIN_13 = "6901234567892"  # as a producer registers it
GTIN_14 = "0" + GTIN_13  # as a Digital Link URI carries it


async def _token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def _own_batch(service: Service, **overrides: Any) -> dict[str, Any]:
    """A batch of a producer in a county picked at random, so that its package codes have a sequence to themselves.

    Each test's service has a secret of its own while the session's database shares each (type, county) sequence,
    so two tests issuing in one county use two permutations of one sequence and may meet on a code; one secret
    never does. The 200,000-code test against another in the same county would collide about once in four runs.
    """
    county = await app_worker(service.app).pool.fetchval(
        "SELECT code FROM regions WHERE level = 3 ORDER BY random() LIMIT 1"
    )
    return await register_batch(service, await register_producer(service, region=county), **overrides)


async def _labels(
    service: Service, batch_code: str, body: Any, *, headers: dict[str, str] | None = None, accept: str = ""
) -> Any:
    sent = dict(service.admin_headers if headers is None else headers)
    if accept:
        sent["Accept"] = accept
    return await service.client.post(f"/api/v1/batches/{batch_code}/labels", json=body, headers=sent, timeout=120)


def _csv_codes(text: str) -> list[str]:
    rows = _csv_rows(text)
    assert all(url == f"{PUBLIC_URL}/t/{code}" for code, url in rows)
    return [code for code, _ in rows]


def _csv_rows(text: str) -> list[tuple[str, str]]:
    """(code, url) of each row after the header."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["code", "url"]
    return [(code, url) for code, url in rows[1:]]


async def _gtin_batch(service: Service, lot: str, gtin: str | None = GTIN_13) -> dict[str, Any]:
    """A batch of lot `lot` whose product has the GTIN `gtin`."""
    return await _own_batch(service, product={"name": "大通牦牛肉", "category": "yak", "gtin": gtin}, lot=lot)


async def _stored_codes(service: Service, batch_id: int) -> list[str]:
    """The package codes of the batch's stored ranges, made with the service's secret."""
    rows = await app_worker(service.app).pool.fetch(
        "SELECT region_code, first_seq, count FROM code_ranges WHERE batch_id = $1 ORDER BY first_seq", batch_id
    )
    issuer = CodeIssuer(service.settings.secret)
    return [code for r in rows for code in issuer.codes(CodeType.PACKAGE, r["region_code"], r["first_seq"], r["count"])]


async def test_200k_labels_as_csv_are_stored_valid_and_resolve_as_packages(service: Service) -> None:
    created = await _own_batch(service)
    batch_code = created["trace_code"]

    response = await _labels(service, batch_code, {"count": 200_000})

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.text.startswith("code,url\r\n")
    codes = _csv_codes(response.text)
    assert len(codes) == 200_000 == len(set(codes))
    assert all(is_valid(c) and type_of(c) is CodeType.PACKAGE and region_of(c) == region_of(batch_code) for c in codes)
    assert sorted(await _stored_codes(service, created["batch_id"])) == sorted(codes)
    for code in random.sample(codes, 20):
        document = (await service.client.get(f"/api/v1/codes/{code}")).json()
        assert document["type"] == "package"
        assert document["code"] == code
        assert document["batch"]["trace_code"] == batch_code
        assert document["status"] == "active"
    assert {"kind": "commissioning", "package_codes": 200_000}.items() <= document["chain"][-1].items()


async def test_labels_as_json(service: Service) -> None:
    created = await _own_batch(service)

    response = await _labels(service, created["trace_code"], {"count": 1_000}, accept="application/json")

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert body["batch"] == created["trace_code"]
    assert body["count"] == 1_000
    assert body["url_prefix"] == f"{PUBLIC_URL}/t/"
    assert len(set(body["codes"])) == 1_000
    assert sorted(await _stored_codes(service, created["batch_id"])) == sorted(body["codes"])


@pytest.mark.parametrize(
    ("accept", "is_json"),
    [
        pytest.param("*/*", False, id="anything-csv"),
        pytest.param("text/csv", False, id="csv"),
        pytest.param("application/json, */*", True, id="json-named-beats-wildcard"),
        pytest.param("application/json, text/csv", False, id="both-named-csv"),
        pytest.param("application/json;q=0, text/csv", False, id="json-refused"),
        pytest.param("application/json;q=0.9, text/csv;q=0.8", True, id="json-preferred-by-q"),
        pytest.param("text/csv;q=0.5, application/json", True, id="csv-named-lower"),
    ],
)
async def test_csv_or_json_by_accept_q_values(service: Service, accept: str, is_json: bool) -> None:
    created = await _own_batch(service)

    response = await _labels(service, created["trace_code"], {"count": 3}, accept=accept)

    assert response.status_code == 201
    codes = response.json()["codes"] if is_json else _csv_codes(response.text)
    assert response.headers["content-type"] == ("application/json" if is_json else "text/csv; charset=utf-8")
    assert sorted(codes) == sorted(await _stored_codes(service, created["batch_id"]))


async def test_batch_named_by_its_national_long_form(service: Service) -> None:
    created = await _own_batch(service)

    response = await _labels(service, created["long_code"], {"count": 3})

    assert response.status_code == 201
    assert sorted(_csv_codes(response.text)) == sorted(await _stored_codes(service, created["batch_id"]))


# Labels that carry the GS1 Digital Link URI (issue 13).


async def test_digital_link_labels_carry_each_package_uri_exactly(service: Service) -> None:
    suffix = secrets.token_hex(3)
    created = await _gtin_batch(service, f"L/{suffix}")  # a slash: percent-encoded in the URI

    response = await _labels(service, created["trace_code"], {"count": 1_000, "link": "digital_link"})

    assert response.status_code == 201, response.text
    assert int(response.headers["content-length"]) == len(response.content)
    rows = _csv_rows(response.text)
    assert [url for code, url in rows] == [f"{PUBLIC_URL}/01/{GTIN_14}/10/L%2F{suffix}/21/{code}" for code, _ in rows]
    assert all(url == PUBLIC_URL + digital_link_path(GTIN_13, f"L/{suffix}", code) for code, url in rows)
    assert sorted(code for code, _ in rows) == sorted(await _stored_codes(service, created["batch_id"]))


@pytest.mark.parametrize(
    ("link", "path"),
    [
        pytest.param("trace", "/t/", id="trace"),
        pytest.param("digital_link", f"/01/{GTIN_14}/10/LOT-1/21/", id="digital-link"),
    ],
)
async def test_labels_as_json_name_their_link(service: Service, link: str, path: str) -> None:
    created = await _gtin_batch(service, "LOT-1")

    response = await _labels(service, created["trace_code"], {"count": 5, "link": link}, accept="application/json")

    assert response.status_code == 201, response.text
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert (body["link"], body["url_prefix"], body["count"]) == (link, PUBLIC_URL + path, 5)
    assert sorted(body["codes"]) == sorted(await _stored_codes(service, created["batch_id"]))


async def test_labels_link_to_the_trace_page_unless_asked(service: Service) -> None:
    created = await _gtin_batch(service, "LOT-1")

    response = await _labels(service, created["trace_code"], {"count": 3}, accept="application/json")

    assert (response.json()["link"], response.json()["url_prefix"]) == ("trace", f"{PUBLIC_URL}/t/")


@pytest.mark.parametrize(
    "link",
    [
        pytest.param("gs1", id="unknown"),
        pytest.param("DIGITAL_LINK", id="upper-case"),
        pytest.param("digital-link", id="hyphen"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param(1, id="number"),
    ],
)
async def test_unknown_link_is_422(service: Service, link: Any) -> None:
    created = await _gtin_batch(service, "LOT-1")

    response = await _labels(service, created["trace_code"], {"count": 1, "link": link})

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert response.json()["errors"][0]["field"] == "link"
    assert await _stored_codes(service, created["batch_id"]) == []


@pytest.mark.parametrize(
    ("gtin", "lot", "problem", "title"),
    [
        pytest.param(None, "LOT-1", "no_gtin", "产品未登记商品条码", id="no-gtin"),
        pytest.param(GTIN_13, "大通2026", "lot_not_gs1", "批号不符合GS1规则", id="chinese-lot"),
        pytest.param(GTIN_13, "LOT 1", "lot_not_gs1", "批号不符合GS1规则", id="space-in-lot"),
        pytest.param(GTIN_13, "L" * 21, "lot_not_gs1", "批号不符合GS1规则", id="lot-too-long"),
    ],
)
async def test_digital_link_needs_a_gtin_and_a_gs1_lot(
    service: Service, gtin: str | None, lot: str, problem: str, title: str
) -> None:
    created = await _gtin_batch(service, lot, gtin)

    refused = await _labels(service, created["trace_code"], {"count": 1, "link": "digital_link"})
    stored = await _stored_codes(service, created["batch_id"])
    traced = await _labels(service, created["trace_code"], {"count": 1})

    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert (refused.json()["code"], refused.json()["title"]) == (problem, title)
    assert created["trace_code"] in refused.json()["detail"] and "追溯码链接" in refused.json()["detail"]
    assert stored == []
    assert traced.status_code == 201


async def test_digital_link_lot_level_resolves_to_the_batch(service: Service) -> None:
    suffix = secrets.token_hex(3)
    created = await _gtin_batch(service, f"L/{suffix}")
    body = (
        await _labels(service, created["trace_code"], {"count": 1, "link": "digital_link"}, accept="application/json")
    ).json()

    response = await service.client.get(body["url_prefix"].removeprefix(PUBLIC_URL).removesuffix("/21/"))

    assert response.status_code == 307
    assert response.headers["location"].endswith(f"/t/{created['trace_code']}")


async def test_digital_link_uri_of_a_label_resolves_to_its_package(service: Service) -> None:
    suffix = secrets.token_hex(3)
    created = await _gtin_batch(service, f"L/{suffix}")
    (row,) = _csv_rows((await _labels(service, created["trace_code"], {"count": 1, "link": "digital_link"})).text)
    code, url = row

    response = await service.client.get(url.removeprefix(PUBLIC_URL), follow_redirects=True)

    assert response.status_code == 200
    assert code in response.text and "产品追溯码" in response.text


async def test_a_labels_request_stores_one_range_row_and_no_row_per_code(service: Service) -> None:
    created = await _own_batch(service)

    codes = _csv_codes((await _labels(service, created["trace_code"], {"count": 50_000})).text)

    pool = app_worker(service.app).pool
    ranges = await pool.fetch(
        "SELECT code_type, region_code, count FROM code_ranges WHERE batch_id = $1", created["batch_id"]
    )
    assert [tuple(r) for r in ranges] == [(CodeType.PACKAGE, region_of(created["trace_code"]), 50_000)]
    assert await pool.fetchval("SELECT count(*) FROM trace_codes WHERE code = ANY ($1::text[])", codes[:1_000]) == 0


async def test_the_first_scan_of_a_package_code_asks_postgres_nothing_once_its_batch_is_known(
    service: Service,
) -> None:
    created = await _own_batch(service)
    first, second, third = _csv_codes((await _labels(service, created["trace_code"], {"count": 3})).text)
    service.query_log.queries.clear()

    answers = [(await service.client.get(f"/api/v1/codes/{code}")).json() for code in (first, second)]
    met = _sent(service)
    service.query_log.queries.clear()
    page = await service.client.get(f"/t/{third}")
    again = (await service.client.get(f"/api/v1/codes/{third}")).json()

    # Its range (once per worker and range), the batch's document, the block's scan counts: then none at all.
    assert met == [
        queries.PACKAGE_RANGES, queries.STORED_DOCUMENTS, queries.DOCUMENT_BY_CODE, queries.STORE_DOCUMENTS,
        queries.PACKAGE_SCAN_BLOCKS,
    ]  # fmt: skip
    assert _sent(service) == []
    assert [(a["code"], a["type"], a["url"]) for a in answers] == [
        (code, "package", f"{PUBLIC_URL}/t/{code}") for code in (first, second)
    ]
    assert answers[0]["batch"]["trace_code"] == created["trace_code"] and answers[0]["scans"]["count"] == 1
    assert page.status_code == 200 and third in page.text and "产品追溯码" in page.text
    assert again["scans"]["count"] == 2 and again["code"] == third


def _sent(service: Service) -> list[str]:
    return [
        q
        for q in service.query_log.queries
        if not q.startswith(HOUSEKEEPING) and not any(part in q for part in ASYNCPG_TYPE_LOOKUP)
    ]


async def test_labels_drop_the_cached_batch_document(service: Service) -> None:
    created = await _own_batch(service)
    before = (await service.client.get(f"/api/v1/codes/{created['trace_code']}")).json()

    await _labels(service, created["trace_code"], {"count": 5})
    after = (await service.client.get(f"/api/v1/codes/{created['trace_code']}")).json()

    assert len(after["chain"]) == len(before["chain"]) + 1
    assert after["chain"][-1]["package_codes"] == 5


async def test_concurrent_requests_in_one_region_never_collide(service: Service) -> None:
    first = await _own_batch(service)
    county = region_of(first["trace_code"])
    second = await register_batch(service, await register_producer(service, region=county))
    batches = [first, second] * 3

    responses = await asyncio.gather(*(_labels(service, b["trace_code"], {"count": 20_000}) for b in batches))

    assert {r.status_code for r in responses} == {201}
    codes = [code for r in responses for code in _csv_codes(r.text)]
    assert len(codes) == len(set(codes)) == 120_000
    for batch in (first, second):
        assert len(await _stored_codes(service, batch["batch_id"])) == 60_000


async def test_labels_need_a_token(service: Service) -> None:
    created = await _own_batch(service)

    response = await _labels(service, created["trace_code"], {"count": 1}, headers={})

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["content-type"] == "application/problem+json"


async def test_only_the_batch_producer_or_admin_issues_labels(service: Service) -> None:
    credit_code = await register_producer(service)
    created = await register_batch(service, credit_code)
    own = await _token(service, "producer", credit_code)
    other = await _token(service, "producer", await register_producer(service))
    regulator = await _token(service, "regulator", "630121")

    mine = await _labels(service, created["trace_code"], {"count": 2}, headers=own)
    theirs = await _labels(service, created["trace_code"], {"count": 2}, headers=other)
    regulators = await _labels(service, created["trace_code"], {"count": 2}, headers=regulator)

    assert mine.status_code == 201
    assert theirs.status_code == regulators.status_code == 403
    assert theirs.json()["code"] == "forbidden"
    assert len(await _stored_codes(service, created["batch_id"])) == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"count": 0}, id="zero"),
        pytest.param({"count": -1}, id="negative"),
        pytest.param({"count": "x"}, id="text"),
        pytest.param({"count": "10"}, id="number-as-text"),
        pytest.param({"count": 1.5}, id="fraction"),
        pytest.param({"count": True}, id="boolean"),
        pytest.param({"count": labels.MAX_LABELS_PER_REQUEST + 1}, id="too-many"),
        pytest.param({}, id="missing"),
        pytest.param({"count": 1, "size": "A4"}, id="unknown-field"),
    ],
)
async def test_bad_count_is_422(service: Service, body: dict[str, Any]) -> None:
    created = await _own_batch(service)

    response = await _labels(service, created["trace_code"], body)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert await _stored_codes(service, created["batch_id"]) == []


@pytest.mark.parametrize(
    ("code", "status", "problem"),
    [
        pytest.param("12345", 400, "malformed_code", id="malformed"),
        pytest.param(compose(1, "630121", 12_345)[:-1] + "0", 400, "malformed_code", id="wrong-check-digit"),
        pytest.param(compose(1, "630121", secrets.randbelow(10**11)), 404, "unknown_code", id="never-issued"),
    ],
)
async def test_bad_batch_code(service: Service, code: str, status: int, problem: str) -> None:
    response = await _labels(service, code, {"count": 1})

    assert response.status_code == status
    assert response.json()["code"] == problem


async def test_a_package_code_is_not_a_batch(service: Service) -> None:
    created = await _own_batch(service)
    (package,) = _csv_codes((await _labels(service, created["trace_code"], {"count": 1})).text)

    response = await _labels(service, package, {"count": 1})

    assert response.status_code == 422
    assert response.json()["code"] == "not_a_batch_code"


async def test_someone_elses_recalled_batch_is_403_before_its_state_is_told(service: Service) -> None:
    recalled = await _own_batch(service)
    await service.client.post(
        f"/api/v1/batches/{recalled['trace_code']}/recall", json={"reason": "抽检不合格"}, headers=service.admin_headers
    )
    other = await _token(service, "producer", await register_producer(service))

    response = await _labels(service, recalled["trace_code"], {"count": 1}, headers=other)

    assert response.status_code == 403 and response.json()["code"] == "forbidden"


async def test_recalled_or_expired_batch_gets_no_labels(service: Service) -> None:
    recalled = await _own_batch(service)
    recall = await service.client.post(
        f"/api/v1/batches/{recalled['trace_code']}/recall",
        json={"reason": "检出禁用药物"},
        headers=service.admin_headers,
    )
    assert recall.status_code == 200, recall.text
    yesterday = dt.date.today() - dt.timedelta(days=1)
    expired = await _own_batch(service, expires_on=yesterday.isoformat())

    responses = [await _labels(service, b["trace_code"], {"count": 1}) for b in (recalled, expired)]

    assert [(r.status_code, r.json()["code"]) for r in responses] == [(409, "recalled"), (409, "expired")]


async def test_a_request_failing_midway_leaves_no_range_and_no_event(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await _own_batch(service)
    state = app_worker(service.app)
    batch = await labels.find_batch(state.pool, created["trace_code"])
    failing = "SELECT $1::timestamptz, $2::bigint, $3, $4, $5, $6, $7::jsonb, 1 / 0"  # the event, after the range
    monkeypatch.setattr(queries, "INSERT_EVENT", failing)

    with pytest.raises(asyncpg.DivisionByZeroError):
        await labels.issue_labels(state.pool, state.issuer, service.settings.secret, batch, 200_000)
    transport = httpx.ASGITransport(app=service.app, raise_app_exceptions=False)  # answer the 500, as a server does
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post(
            f"/api/v1/batches/{created['trace_code']}/labels", json={"count": 1_000}, headers=service.admin_headers
        )

    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert await _stored_codes(service, created["batch_id"]) == []
    monkeypatch.undo()
    events = await state.pool.fetch("SELECT data FROM events WHERE batch_id = $1", created["batch_id"])
    assert not any("package_codes" in row["data"] for row in events)
    again = await _labels(service, created["trace_code"], {"count": 10})
    assert again.status_code == 201
    assert sorted(await _stored_codes(service, created["batch_id"])) == sorted(_csv_codes(again.text))


def test_csv_and_json_rows_match_plain_formatting() -> None:
    keys = derive_round_keys(b"answer format secret of 32 bytes", CodeType.PACKAGE, "630121")
    block = issue_block(CodeType.PACKAGE, "630121", 0, 3, keys)
    codes = block_to_strings(block)
    prefix = labels.url_prefix(PUBLIC_URL + "/")

    assert labels.csv_rows(block, prefix.encode()) == "".join(f"{c},{prefix}{c}\r\n" for c in codes).encode()
    assert orjson.loads(b"[" + labels.json_items(block)[1:] + b"]") == codes
    assert labels.csv_length(3, prefix.encode()) == len(labels.CSV_HEADER + labels.csv_rows(block, prefix.encode()))


def test_pdf_files_hold_at_most_their_share() -> None:
    out = Path("labels.pdf")

    assert labels.pdf_paths(out, labels.MAX_PDF_LABELS_PER_FILE) == [out]
    assert labels.pdf_paths(out, 2 * labels.MAX_PDF_LABELS_PER_FILE + 1) == [
        Path("labels-001.pdf"),
        Path("labels-002.pdf"),
        Path("labels-003.pdf"),
    ]


# The PDF label sheet.


def _sheet(has_certificate: bool, codes: list[str]) -> pypdfium2.PdfDocument:
    sheet = LabelSheet(public_url=PUBLIC_URL, product_name="大通牦牛肉", has_certificate=has_certificate)
    out = io.BytesIO()
    pages = sheet.write(codes, out)
    document = pypdfium2.PdfDocument(out.getvalue())
    assert len(document) == pages
    return document


def _codes(count: int) -> list[str]:
    return CodeIssuer(b"label sheet test secret, 32 byte").codes(CodeType.PACKAGE, "630121", 0, count)


def test_first_label_qr_code_reads_as_the_code_url() -> None:
    codes = _codes(30)
    document = _sheet(True, codes)

    image = document[0].render(scale=RENDER_SCALE).to_pil()
    label = (LABEL_WIDTH_MM * POINTS_PER_MM * RENDER_SCALE, (LABEL_HEIGHT_MM + 0.5) * POINTS_PER_MM * RENDER_SCALE)
    found = zxingcpp.read_barcodes(image.crop((0, 0, int(label[0]), int(label[1]))))

    assert len(document) == 2  # 24 labels a page
    assert [b.text for b in found] == [f"{PUBLIC_URL}/t/{codes[0]}"]
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    assert found[0].ec_level in ("Q", "H")


def test_every_label_of_a_page_reads() -> None:
    codes = _codes(24)

    image = _sheet(False, codes)[0].render(scale=RENDER_SCALE).to_pil()

    assert sorted(b.text for b in zxingcpp.read_barcodes(image)) == sorted(f"{PUBLIC_URL}/t/{c}" for c in codes)


@pytest.mark.parametrize("has_certificate", [True, False])
def test_label_text_has_grouped_code_and_certificate(has_certificate: bool) -> None:
    codes = _codes(2)

    text = _sheet(has_certificate, codes)[0].get_textpage().get_text_range()

    assert group(codes[0]) in text and group(codes[1]) in text
    assert "大通牦牛肉" in text and "产品追溯码" in text
    assert ("承诺达标合格证" in text) is has_certificate


def test_qr_module_size_is_checked() -> None:
    sheet = LabelSheet(public_url=PUBLIC_URL, product_name="枸杞", has_certificate=False)

    assert sheet.module_mm(_codes(1)[0]) >= MIN_MODULE_MM
    with pytest.raises(ValueError, match="shorten"):
        LabelSheet(public_url="https://example.cn/" + "x" * 200, product_name="枸杞", has_certificate=False)


def _label_batch(gtin: str | None, lot: str) -> LabelBatch:
    return LabelBatch(
        batch_id=1, trace_code=compose(1, "630121", 1), long_code="", lot=lot, gtin=gtin, status="active",
        producer_id=1, credit_code="", product_name="大通牦牛肉", has_certificate=True,
    )  # fmt: skip


def test_link_path_is_the_digital_link_up_to_the_serial() -> None:
    assert labels.link_path(_label_batch(None, "大通"), "trace") == "/t/"
    assert labels.link_path(_label_batch(GTIN_14, "A(1)/b"), "digital_link") == f"/01/{GTIN_14}/10/A%281%29%2Fb/21/"


@pytest.mark.parametrize(
    ("gtin", "lot", "problem"),
    [
        pytest.param(None, "LOT-1", "no_gtin", id="no-gtin"),
        pytest.param(GTIN_14[:-1] + "0", "LOT-1", "invalid_gtin", id="stored-gtin-with-a-wrong-check-digit"),
        pytest.param(GTIN_14, "", "lot_not_gs1", id="empty-lot"),
        pytest.param(GTIN_14, "LOT~1", "lot_not_gs1", id="tilde-outside-set-82"),
    ],
)
def test_link_path_refuses_what_a_digital_link_cannot_carry(gtin: str | None, lot: str, problem: str) -> None:
    assert labels.link_path(_label_batch(gtin, lot), "trace") == "/t/"
    with pytest.raises(Problem) as refused:
        labels.link_path(_label_batch(gtin, lot), "digital_link")

    assert (refused.value.status, refused.value.code) == (409, problem)


def test_digital_link_label_qr_codes_read_as_the_package_uri() -> None:
    codes = _codes(24)
    batch = _label_batch(GTIN_14, "BENCH-YAK-A1B2C3")
    sheet = labels.label_sheet(PUBLIC_URL, batch, labels.link_path(batch, "digital_link"))
    out = io.BytesIO()
    sheet.write(codes, out)

    image = pypdfium2.PdfDocument(out.getvalue())[0].render(scale=RENDER_SCALE).to_pil()
    found = zxingcpp.read_barcodes(image)

    expected = [f"{PUBLIC_URL}/01/{GTIN_14}/10/BENCH-YAK-A1B2C3/21/{code}" for code in codes]
    assert sorted(b.text for b in found) == sorted(expected)
    assert {b.ec_level for b in found} <= {"Q", "H"}
    assert sheet.module_mm(codes[0]) >= MIN_MODULE_MM


# The command line.


async def test_command_line_writes_csv_and_pdf(service: Service, tmp_path: Path) -> None:
    created = await _own_batch(service)
    env = subprocess_env(
        DATABASE_URL=service.settings.database_url,
        REDIS_URL=service.settings.redis_url,
        TRACECODE_SECRET=service.settings.secret.decode(),  # the deployment's: its codes are its ranges
        TRACECODE_PUBLIC_URL=PUBLIC_URL,
    )
    csv_path, pdf_path = tmp_path / "labels.csv", tmp_path / "labels.pdf"

    csv_out = await asyncio.to_thread(
        run_tracecode, env, "labels", "--batch", created["trace_code"], "--count", "1000", "--out", str(csv_path)
    )
    pdf_out = await asyncio.to_thread(
        run_tracecode, env, "labels", "--batch", created["trace_code"], "--count", "30", "--out", str(pdf_path)
    )

    assert "issued 1000 package codes" in csv_out and "issued 30 package codes" in pdf_out
    from_csv = _csv_codes(csv_path.read_text())
    document = pypdfium2.PdfDocument(pdf_path)
    text = "".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    stored = await _stored_codes(service, created["batch_id"])
    assert len(from_csv) == 1_000 and len(document) == 2
    from_pdf = [c for c in stored if group(c) in text]
    assert len(from_pdf) == 30 and sorted(from_csv + from_pdf) == sorted(stored)


async def test_command_line_writes_digital_link_csv_and_pdf(service: Service, tmp_path: Path) -> None:
    lot = f"L/{secrets.token_hex(3)}"
    created = await _gtin_batch(service, lot)
    env = subprocess_env(
        DATABASE_URL=service.settings.database_url,
        REDIS_URL=service.settings.redis_url,
        TRACECODE_SECRET=service.settings.secret.decode(),
        TRACECODE_PUBLIC_URL=PUBLIC_URL,
    )
    csv_path, pdf_path = tmp_path / "labels.csv", tmp_path / "labels.pdf"
    labels_of = ("labels", "--batch", created["trace_code"], "--digital-link", "--count")

    csv_out = await asyncio.to_thread(run_tracecode, env, *labels_of, "100", "--out", str(csv_path))
    pdf_out = await asyncio.to_thread(run_tracecode, env, *labels_of, "24", "--out", str(pdf_path))

    prefix = f"{PUBLIC_URL}/01/{GTIN_14}/10/{lot.replace('/', '%2F')}/21/"
    assert f"each label's URL: {prefix}{{code}}" in csv_out and "issued 24 package codes" in pdf_out
    rows = _csv_rows(csv_path.read_text())
    assert len(rows) == 100 and all(url == prefix + code for code, url in rows)
    image = pypdfium2.PdfDocument(pdf_path)[0].render(scale=RENDER_SCALE).to_pil()
    from_pdf = sorted(b.text for b in zxingcpp.read_barcodes(image))
    printed = sorted(set(await _stored_codes(service, created["batch_id"])) - {code for code, _ in rows})
    assert from_pdf == [prefix + code for code in printed] and len(printed) == 24


async def test_command_line_refuses_a_digital_link_without_gtin(service: Service, tmp_path: Path) -> None:
    created = await _gtin_batch(service, "LOT-1", gtin=None)
    env = subprocess_env(DATABASE_URL=service.settings.database_url, REDIS_URL=service.settings.redis_url)
    out = tmp_path / "labels.pdf"

    done = await asyncio.to_thread(
        subprocess.run,
        [TRACECODE, "labels", "--batch", created["trace_code"], "--count", "5", "--out", str(out), "--digital-link"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert "未登记商品条码" in done.stderr
    assert not out.exists()
    assert await _stored_codes(service, created["batch_id"]) == []


async def test_command_line_refuses_an_unknown_batch(service: Service, tmp_path: Path) -> None:
    env = subprocess_env(DATABASE_URL=service.settings.database_url, REDIS_URL=service.settings.redis_url)
    unknown = compose(1, "630121", secrets.randbelow(10**11))

    done = await asyncio.to_thread(
        subprocess.run,
        [TRACECODE, "labels", "--batch", unknown, "--count", "5", "--out", str(tmp_path / "labels.csv")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert "未登记" in done.stderr
    assert not (tmp_path / "labels.csv").exists()
