"""Lists as CSV for spreadsheets: UTF-8 with a BOM (so that Excel reads the Chinese as UTF-8), CRLF lines.

A list route answers JSON unless the Accept header prefers `text/csv` (`LIST_OFFERS`). A text cell that starts
with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so that a name typed by a user is never
run as a formula when the file is opened (CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from resolver.edge.negotiate import JSON_MEDIA_TYPE, Offers

CSV_MEDIA_TYPE: Final = "text/csv"
LIST_OFFERS: Final = Offers(JSON_MEDIA_TYPE, CSV_MEDIA_TYPE)  # JSON unless the Accept header prefers CSV
UTF8_BOM: Final = "\ufeff"
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | float | None


def wants_csv(request: Request) -> bool:
    """Whether the request's Accept header prefers CSV to JSON."""
    return LIST_OFFERS.preferred(request.headers.get("accept")) == CSV_MEDIA_TYPE


def _cell(value: Cell) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """The CSV file: the BOM, the header row, the rows."""
    out = io.StringIO()
    out.write(UTF8_BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def csv_response(columns: Sequence[str], rows: Iterable[Sequence[Cell]], *, filename: str) -> Response:
    """A CSV answer to download as `filename` (ASCII)."""
    return Response(
        csv_text(columns, rows).encode(),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Vary": "Accept"},
    )
