"""GS1 Digital Link request paths, checked before any I/O: the gtin-path of GS1 Digital Link URI Syntax (4.9).

`/01/{gtin}[/22/{cpv}][/10/{lot}][/21/{serial}]`, or `/01/{gtin}/235/{tpx}`: the GTIN in any of its lengths with a
right check digit, each qualifier at most once and in that order, each value 1 to its AI's length of GS1's set 82
(percent-encoded as the syntax asks; `%2F` belongs to a value, a bare `/` separates). One trailing slash is
tolerated (resolver standard 2.13). Anything else, data attributes in the path (`/17/...`) included, is not a
conformant Digital Link URI: Problem 400 (resolver standard 2.4.1) with a stable code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from codegen.digitallink import LOT_MAX_LENGTH, SERIAL_MAX_LENGTH, is_cset82
from codegen.gtin import InvalidGtin, normalise_gtin
from resolver.edge.problems import Problem

GTIN_AI: Final = "01"
CPV_AI: Final = "22"  # consumer product variant
LOT_AI: Final = "10"
SERIAL_AI: Final = "21"
TPX_AI: Final = "235"  # third-party controlled serial, alone after the GTIN
CPV_MAX_LENGTH: Final = 20  # GS1 General Specifications, AI 22
TPX_MAX_LENGTH: Final = 28  # GS1 General Specifications, AI 235
GTINS_REMEMBERED: Final = 4_096  # valid GTINs whose 14-digit form is remembered (a refused one never is)
PATH_MAX_BYTES: Final = 512  # the longest conformant path, every value percent-encoded, is under 400 bytes

# AI -> (its place in the path, its longest value, its name for people)
_QUALIFIERS: Final = {
    CPV_AI: (0, CPV_MAX_LENGTH, "商品变体（AI 22）"),
    LOT_AI: (1, LOT_MAX_LENGTH, "批号（AI 10）"),
    SERIAL_AI: (2, SERIAL_MAX_LENGTH, "序列号（AI 21）"),
    TPX_AI: (3, TPX_MAX_LENGTH, "第三方序列号（AI 235）"),
}
_SET82_TEXT: Final = "字母、数字及 !\"%&'()*+,-./:;<=>?_"


@dataclass(frozen=True, slots=True)
class DigitalLink:
    """A checked GS1 Digital Link URI path: the 14-digit GTIN and the qualifiers it carries."""

    gtin: str
    cpv: str | None = None
    lot: str | None = None
    serial: str | None = None
    tpx: str | None = None

    def path(self, *, lot: bool = True, serial: bool = True) -> str:
        """The canonical path of this URI, or of a less specific one: without the lot or the serial."""
        path = f"/{GTIN_AI}/{self.gtin}"
        for ai, value, wanted in ((LOT_AI, self.lot, lot), (SERIAL_AI, self.serial, serial)):
            if value is not None and wanted:
                path += f"/{ai}/{quote(value, safe='')}"
        return path


def parse_path(raw: bytes) -> DigitalLink:
    """The Digital Link of `raw`, the request's raw (percent-encoded) path after `/01/`; Problem 400 if it is none."""
    if len(raw) > PATH_MAX_BYTES:
        raise _malformed("path_too_long", f"数字链接路径不应超过{PATH_MAX_BYTES}字节")
    if raw.endswith(b"/"):
        raw = raw[:-1]
    gtin_text, *rest = raw.split(b"/")
    gtin = checked_gtin(gtin_text.decode("latin-1"))
    if len(rest) % 2:
        raise _malformed("malformed_path", "商品条码之后应为成对的“应用标识符/值”")
    values: dict[str, str] = {}
    last_place = -1
    for i in range(0, len(rest), 2):
        ai = rest[i].decode("latin-1")
        qualifier = _QUALIFIERS.get(ai)
        if qualifier is None:
            raise Problem(
                400, "unknown_ai", "不支持的应用标识符",
                f"路径中的 {ai} 不是商品条码（AI 01）的限定符；路径只能依次包含 22、10、21（或单独的 235），"
                "其他数据（如 AI 17）应放在查询字符串中",
                ai=ai,
            )  # fmt: skip
        place, max_length, name = qualifier
        if place <= last_place or (ai == TPX_AI and values) or (TPX_AI in values):
            raise Problem(
                400, "qualifier_order", "限定符顺序错误",
                "限定符应按 22、10、21 的顺序各出现一次，235 只能单独跟在商品条码之后", ai=ai,
            )  # fmt: skip
        last_place = place
        value = unquote_to_bytes(rest[i + 1]).decode("utf-8", "replace")
        if not is_cset82(value, max_length):
            code = "invalid_lot" if ai == LOT_AI else "invalid_serial" if ai == SERIAL_AI else "invalid_qualifier"
            raise Problem(
                400, code, f"{name}格式错误", f"{name}应为1至{max_length}个 GS1 可编码字符（{_SET82_TEXT}）", ai=ai
            )
        values[ai] = value
    return DigitalLink(
        gtin, cpv=values.get(CPV_AI), lot=values.get(LOT_AI), serial=values.get(SERIAL_AI), tpx=values.get(TPX_AI)
    )


def checked_gtin(text: str) -> str:
    """`text` as a 14-digit GTIN; Problem 400 `invalid_gtin` (with the reason) if it is not one."""
    try:
        return _normalised_gtin(text)
    except InvalidGtin as exc:
        raise Problem(400, "invalid_gtin", "商品条码（GTIN）错误", exc.message, reason=exc.reason) from None


@functools.lru_cache(maxsize=GTINS_REMEMBERED)  # a pure function, and its check digit a third of a parse
def _normalised_gtin(text: str) -> str:
    return normalise_gtin(text)


def _malformed(code: str, detail: str) -> Problem:
    return Problem(400, code, "数字链接格式错误", detail)
