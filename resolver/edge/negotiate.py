"""Media-type negotiation: which of a route's answers an `Accept` header prefers (RFC 9110 12.5.1).

`media_ranges` parses a header and `quality` reads the q it gives one media type: the GS1 resolver builds its
own rules on them. A route that answers in a few media types keeps an `Offers` and asks it `preferred(accept)`:
the offer of the highest q, among equals the one a range names most specifically (`application/json` beats
`*/*`), among those the route's default (its first); the default too when the client accepts none of them,
since a scan answered with a page beats a 406. Its answers are remembered per raw header value: clients send
a handful of distinct headers, and the scan path asks on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

from starlette.types import Scope

HTML_MEDIA_TYPE: Final = "text/html"
JSON_MEDIA_TYPE: Final = "application/json"
MAX_ACCEPT_RANGES: Final = 32  # media ranges read from one Accept header; the rest are ignored
MAX_REMEMBERED_HEADERS: Final = 256  # distinct Accept values an Offers remembers; the oldest goes first
MAX_REMEMBERED_LENGTH: Final = 1_024  # a longer value is parsed each time (browsers send 100 to 300 characters)


class MediaRange(NamedTuple):  # a tuple: made several times per header parsed, 5x faster than a frozen dataclass
    type: str
    subtype: str
    q: float


_ANY: Final = (MediaRange("*", "*", 1.0),)


def media_ranges(accept: str | bytes | None) -> Sequence[MediaRange]:
    """The media ranges of an Accept header; entries that do not parse are skipped, none at all accepts anything."""
    if isinstance(accept, bytes):
        accept = accept.decode("latin-1")  # as Starlette decodes headers
    ranges: list[MediaRange] = []
    for entry in (accept or "").split(",")[:MAX_ACCEPT_RANGES]:
        name, *params = entry.split(";")
        type_, slash, subtype = name.strip().lower().partition("/")
        if not (type_ and slash and subtype) or (type_ == "*" and subtype != "*"):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:  # also refuses nan and inf
            ranges.append(MediaRange(type_, subtype, q))
    return ranges or _ANY


def quality(ranges: Sequence[MediaRange], media_type: str, *, explicit: bool = False) -> float:
    """The q of `media_type`: the most specific matching range decides; 0 if none matches.

    With `explicit`, only a range naming the type itself counts, not `type/*` or `*/*`.
    """
    return _precedence(ranges, media_type, explicit=explicit)[0]


def _precedence(ranges: Sequence[MediaRange], media_type: str, *, explicit: bool = False) -> tuple[float, int]:
    """(q, specificity) of `media_type`: specificity 2 for a range naming it, 1 for `type/*`, 0 for `*/*`, -1
    for no match (q 0)."""
    type_, _, subtype = media_type.partition("/")
    best_specificity, best_q = -1, 0.0
    for r in ranges:
        if r.type == type_ and r.subtype == subtype:
            specificity = 2
        elif explicit:
            continue
        elif r.type == type_ and r.subtype == "*":
            specificity = 1
        elif r.type == "*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity or (specificity == best_specificity and r.q > best_q):
            best_specificity, best_q = specificity, r.q
    return best_q, best_specificity


class Offers:
    """The media types a route answers in, its default first; `preferred` picks one for an Accept header."""

    __slots__ = ("_chosen", "media_types")

    def __init__(self, default: str, *others: str) -> None:
        self.media_types = (default, *others)
        self._chosen: dict[str | bytes | None, str] = {}

    def __repr__(self) -> str:
        return f"Offers{self.media_types!r}"

    def preferred(self, accept: str | bytes | None) -> str:
        """The offer `accept` (a raw header value, None when absent) prefers; remembered per value."""
        chosen = self._chosen.get(accept)
        if chosen is None:
            chosen = self.choose(media_ranges(accept))
            if accept is None or len(accept) <= MAX_REMEMBERED_LENGTH:
                if len(self._chosen) >= MAX_REMEMBERED_HEADERS:
                    del self._chosen[next(iter(self._chosen))]
                self._chosen[accept] = chosen
        return chosen

    def choose(self, ranges: Sequence[MediaRange]) -> str:
        """The offer `ranges` prefer: highest q, then most specific range, then the earlier offer."""
        best, best_precedence = self.media_types[0], (0.0, -1)
        for media_type in self.media_types:
            precedence = _precedence(ranges, media_type)
            if precedence > best_precedence:
                best, best_precedence = media_type, precedence
        return best if best_precedence[0] > 0 else self.media_types[0]


def accept_of(scope: Scope) -> bytes | None:
    """The raw value of a request's first Accept header, None without one: for raw ASGI routes."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"accept":
            return value
    return None
