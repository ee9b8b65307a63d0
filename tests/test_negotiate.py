"""resolver.edge.negotiate: Accept headers parsed and the preferred offer chosen (pure logic, no service)."""

from __future__ import annotations

import pytest

from resolver.edge import negotiate
from resolver.edge.negotiate import HTML_MEDIA_TYPE, JSON_MEDIA_TYPE, MediaRange, Offers, accept_of, media_ranges

BROWSER = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.7"
)


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        pytest.param(None, HTML_MEDIA_TYPE, id="absent"),
        pytest.param("", HTML_MEDIA_TYPE, id="empty"),
        pytest.param("*/*", HTML_MEDIA_TYPE, id="anything-the-default"),
        pytest.param("text/html", HTML_MEDIA_TYPE, id="html"),
        pytest.param("application/json", JSON_MEDIA_TYPE, id="json"),
        pytest.param(BROWSER, HTML_MEDIA_TYPE, id="browser"),
        pytest.param("application/json, text/plain, */*", JSON_MEDIA_TYPE, id="named-beats-wildcard"),
        pytest.param("application/json, text/html", HTML_MEDIA_TYPE, id="both-named-the-default"),
        pytest.param("application/json;q=0, text/html", HTML_MEDIA_TYPE, id="json-refused"),
        pytest.param("application/json;q=0.9, text/html;q=0.8", JSON_MEDIA_TYPE, id="json-by-q"),
        pytest.param("text/html;q=0.5, application/json", JSON_MEDIA_TYPE, id="json-by-q-named-last"),
        pytest.param("application/*", JSON_MEDIA_TYPE, id="json-by-subtype-wildcard"),
        pytest.param("APPLICATION/JSON ; Q=0.9 , text/html ; q=0.1", JSON_MEDIA_TYPE, id="case-and-spaces"),
        pytest.param("application/json;q=0", HTML_MEDIA_TYPE, id="nothing-acceptable-the-default"),
        pytest.param("image/png", HTML_MEDIA_TYPE, id="neither-the-default"),
        pytest.param("application/json;q=x, text/html;q=0.5", HTML_MEDIA_TYPE, id="bad-q-skipped"),
        pytest.param("application/json;q=2, text/html;q=0.5", HTML_MEDIA_TYPE, id="q-over-1-skipped"),
        pytest.param("*/json, garbage, /, text/html;q=0.4", HTML_MEDIA_TYPE, id="bad-ranges-skipped"),
        pytest.param(b"application/json;q=0.9, text/html;q=0.8", JSON_MEDIA_TYPE, id="raw-bytes"),
    ],
)
def test_preferred(accept: str | bytes | None, chosen: str) -> None:
    offers = Offers(HTML_MEDIA_TYPE, JSON_MEDIA_TYPE)

    assert offers.preferred(accept) == chosen
    assert offers.preferred(accept) == chosen  # remembered: the same answer


def test_the_default_is_the_first_offer() -> None:
    csv_first = Offers("text/csv", JSON_MEDIA_TYPE)

    assert csv_first.preferred("*/*") == "text/csv"
    assert csv_first.preferred("application/json, text/csv") == "text/csv"
    assert csv_first.preferred("application/json;q=0.9, text/csv;q=0.8") == JSON_MEDIA_TYPE
    assert csv_first.preferred("text/*;q=0.2, application/json;q=0.1") == "text/csv"


def test_media_ranges_read_at_most_max_accept_ranges() -> None:
    many = ", ".join(["image/png"] * negotiate.MAX_ACCEPT_RANGES + ["application/json"])

    assert media_ranges("text/html;level=1;q=0.5") == [MediaRange("text", "html", 0.5)]
    assert Offers(HTML_MEDIA_TYPE, JSON_MEDIA_TYPE).preferred(many) == HTML_MEDIA_TYPE


def test_remembered_headers_are_bounded_oldest_first() -> None:
    offers = Offers(HTML_MEDIA_TYPE, JSON_MEDIA_TYPE)
    values = [f"application/json;q=0.{i % 9 + 1}, x/y{i}" for i in range(negotiate.MAX_REMEMBERED_HEADERS + 10)]
    long_value = "application/json, " + "x/y, " * negotiate.MAX_REMEMBERED_LENGTH

    for value in [*values, long_value]:
        assert offers.preferred(value) == JSON_MEDIA_TYPE

    assert len(offers._chosen) == negotiate.MAX_REMEMBERED_HEADERS
    assert values[0] not in offers._chosen and values[-1] in offers._chosen
    assert long_value not in offers._chosen


def test_accept_of_reads_the_first_accept_header() -> None:
    headers = [(b"host", b"x"), (b"accept", b"application/json"), (b"accept", b"text/html")]

    assert accept_of({"headers": headers}) == b"application/json"
    assert accept_of({"headers": headers[:1]}) is None
