"""Hostile input: whatever arrives, the answer is a clean 4xx problem (or the document), never a 5xx."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message

from codegen.format import MalformedCode, compose, is_valid, parse
from resolver.state import app_worker
from tests.conftest import Service, random_credit_code
from tests.helpers import register_batch

codes = st.builds(
    compose,
    st.integers(1, 4),
    st.from_regex(r"[1-9][0-9]{5}", fullmatch=True),
    st.integers(0, 10**11 - 1),
)
separators = st.sampled_from([" ", "-", "\u2014", "\u3000", "  "])


@given(st.text(max_size=300))
def test_parse_accepts_only_valid_codes_and_fails_only_with_malformed_code(text: str) -> None:
    try:
        code = parse(text)
    except MalformedCode as exc:
        assert exc.reason and exc.message
    else:
        assert len(code) == 20 and code.isascii() and code.isdigit() and is_valid(code)


@given(codes, st.lists(st.tuples(st.integers(1, 19), separators), max_size=6))
def test_parse_ignores_separators_between_digits(code: str, cuts: list[tuple[int, str]]) -> None:
    spelled = code
    for position, separator in sorted(cuts, reverse=True):
        spelled = spelled[:position] + separator + spelled[position:]

    assert parse(spelled) == code
    assert parse(f"https://trace.example.cn/t/{spelled}?from=qr") == code


@settings(max_examples=300)
@given(codes, st.integers(0, 19), st.integers(1, 9))
def test_parse_rejects_any_single_digit_change(code: str, position: int, delta: int) -> None:
    changed = code[:position] + str((int(code[position]) + delta) % 10) + code[position + 1 :]

    with pytest.raises(MalformedCode):
        parse(changed)


@pytest.mark.parametrize(
    ("method", "path", "content", "headers"),
    [
        pytest.param("GET", "/t/..%2F..%2Fetc%2Fpasswd", None, {}, id="traversal"),
        pytest.param("GET", "/api/v1/codes/%00%00", None, {}, id="nul"),
        pytest.param("GET", "/api/v1/codes/" + "9" * 5000, None, {}, id="long-path"),
        pytest.param("GET", "/api/v1/codes/%F0%9F%90%AE%ED%A0%80", None, {}, id="emoji-and-surrogate"),
        pytest.param("GET", "/api/v1/codes/1'%20OR%201=1--", None, {}, id="sql"),
        pytest.param("POST", "/api/v1/producers", b"[" * 100_000 + b"]" * 100_000, {}, id="deep-json"),
        pytest.param("POST", "/api/v1/producers", b"\xc3\x28", {}, id="invalid-utf8"),
        pytest.param("POST", "/api/v1/batches", b'{"lot": "\\ud800"}', {}, id="lone-surrogate-escape"),
        pytest.param("POST", "/api/v1/gate/scans", b"{}", {}, id="no-token"),
        pytest.param("DELETE", "/api/v1/codes/1", None, {}, id="wrong-method"),
        pytest.param("GET", "/nowhere", None, {}, id="unknown-route"),
    ],
)
async def test_hostile_requests_get_a_clean_problem(
    service: Service, method: str, path: str, content: bytes | None, headers: dict[str, str]
) -> None:
    response = await service.client.request(
        method, path, content=content, headers={**service.admin_headers, "Content-Type": "application/json", **headers}
    )

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(("application/problem+json", "text/html"))
    if response.headers["content-type"].startswith("application/problem+json"):
        problem = response.json()
        assert problem["code"] and problem["status"] == response.status_code
    assert "Traceback" not in response.text


async def test_sql_in_strings_is_just_text(service: Service) -> None:
    created = await register_batch(service, lot="x'); DROP TABLE batches;--")

    response = await service.client.get(f"/api/v1/codes/{created['trace_code']}")

    assert response.json()["batch"]["lot"] == "x'); DROP TABLE batches;--"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "/api/v1/batches", id="batches"),
        pytest.param("POST", "/api/v1/producers", id="producers"),
        pytest.param("POST", "/api/v1/tokens", id="tokens"),
        pytest.param("PATCH", "/api/v1/certifications/1", id="certifications"),
    ],
)
async def test_a_client_breaking_off_its_upload_is_one_quiet_line(
    service: Service, method: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    partial: Message = {"type": "http.request", "body": b'{"name": "', "more_body": True}
    messages = iter([partial, {"type": "http.disconnect"}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("10.0.0.1", 5),
        "server": ("testserver", 80), "app": service.app,
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", b"500"),
                    (b"authorization", f"Bearer {service.settings.admin_token}".encode())],
    }  # fmt: skip
    with caplog.at_level(logging.INFO):
        await service.app(scope, receive, send)

    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert len([r for r in caplog.records if "client left" in r.getMessage()]) == 1
    requests = app_worker(service.app).metrics.requests
    assert not [key for key, n in requests.items() if key[2] >= 500 and n]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("合作社\u202e社作合", id="right-to-left-override"),
        pytest.param("合作\u2066社\u2069", id="bidi-isolate"),
        pytest.param("合作\u200d社", id="zero-width-joiner"),
        pytest.param("\ufeff合作社", id="byte-order-mark"),
        pytest.param("合作社\n伪造行", id="newline"),
        pytest.param("合作社\u2028伪造行", id="line-separator"),
        pytest.param("合作\t社", id="tab"),
    ],
)
async def test_names_refuse_invisible_and_line_breaking_characters(service: Service, name: str) -> None:
    body = {"credit_code": random_credit_code(), "name": name, "kind": "cooperative", "region_code": "630121"}

    response = await service.client.post("/api/v1/producers", json=body, headers=service.admin_headers)

    assert response.status_code == 422 and response.json()["code"] == "invalid_input"


async def test_a_recall_reason_may_have_lines_but_no_bidi_controls(service: Service) -> None:
    first, second = await register_batch(service), await register_batch(service)

    lines = await service.client.post(
        f"/api/v1/batches/{first['trace_code']}/recall", json={"reason": "抽检不合格\n复检仍不合格"},
        headers=service.admin_headers,
    )  # fmt: skip
    bidi = await service.client.post(
        f"/api/v1/batches/{second['trace_code']}/recall", json={"reason": "合格\u202e格合不"},
        headers=service.admin_headers,
    )  # fmt: skip

    assert lines.status_code == 200
    assert bidi.status_code == 422


async def test_pages_carry_security_headers(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]

    pages = [
        await service.client.get(f"/t/{code}"),
        await service.client.get(f"/t/{code[:-1]}0"),  # the problem page of a wrong check digit
        await service.client.get("/regions/630000"),
    ]

    for page in pages:
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
