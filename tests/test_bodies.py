"""resolver.edge.bodies: the one capped body reader and the one text rule (pure logic, no service)."""

from __future__ import annotations

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive

from resolver.edge.bodies import is_clean_text, read_capped
from resolver.edge.problems import Problem

MAX_BYTES = 10


def _receive(*chunks: bytes, is_cut: bool = False) -> tuple[Receive, list[Message]]:
    """A receive that gives `chunks` as one body (then a disconnect if `is_cut`), and the messages not yet read."""
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": is_cut or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if is_cut:
        messages.append({"type": "http.disconnect"})

    async def receive() -> Message:
        return messages.pop(0)

    return receive, messages


def _too_large() -> Problem:
    return Problem(413, "payload_too_large", "too large")


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"0123456789"], id="one-message-at-the-cap"),
        pytest.param([b"01", b"", b"2345", b"6789"], id="chunks"),
        pytest.param([b""], id="empty"),
    ],
)
async def test_read_capped_joins_the_chunks(chunks: list[bytes]) -> None:
    receive, _ = _receive(*chunks)

    assert await read_capped(receive, None, max_bytes=MAX_BYTES, too_large=_too_large) == b"".join(chunks)


async def test_read_capped_stops_at_the_chunk_that_passes_the_cap() -> None:
    receive, left = _receive(b"012345", b"6789X", b"never read")

    with pytest.raises(Problem) as raised:
        await read_capped(receive, None, max_bytes=MAX_BYTES, too_large=_too_large)

    assert raised.value.status == 413
    assert [m["body"] for m in left] == [b"never read"]


@pytest.mark.parametrize("declared", [b"11", "11", "99999999999999999999"])
async def test_read_capped_refuses_a_declared_length_before_reading(declared: bytes | str) -> None:
    receive, left = _receive(b"small")

    with pytest.raises(Problem):
        await read_capped(receive, declared, max_bytes=MAX_BYTES, too_large=_too_large)

    assert len(left) == 1


async def test_read_capped_raises_client_disconnect() -> None:
    receive, _ = _receive(b"01", is_cut=True)

    with pytest.raises(ClientDisconnect):
        await read_capped(receive, b"5", max_bytes=MAX_BYTES, too_large=_too_large)


@pytest.mark.parametrize(
    ("text", "is_clean", "is_clean_multiline"),
    [
        pytest.param("scanner-0001", True, True, id="ascii"),
        pytest.param("大通牦牛肉　一级", True, True, id="chinese-ideographic-space"),
        pytest.param("line\nbreak\ttab", False, True, id="newline-and-tab"),
        pytest.param("a\u2028b", False, True, id="line-separator"),
        pytest.param("evil\u202egnp.exe", False, False, id="bidi-override"),
        pytest.param("zero\u200bwidth", False, False, id="zero-width"),
        pytest.param("bell\x07", False, False, id="control"),
        pytest.param("\ue000", False, False, id="private-use"),
    ],
)
def test_is_clean_text(text: str, is_clean: bool, is_clean_multiline: bool) -> None:
    assert is_clean_text(text) is is_clean
    assert is_clean_text(text, is_multiline=True) is is_clean_multiline
