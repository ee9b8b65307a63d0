"""A4 sheets of package labels (产品追溯码) as PDF: ``LabelSheet(...).write(codes, out)``.

Each label carries the QR code of the code's URL (``{public_url}/t/{code}``, or its GS1 Digital Link URI
``{public_url}/01/{gtin}/10/{lot}/21/{code}``: the ``path`` the code follows), the code in digit groups
(``codegen.format.group``) for typing at a gate, the product name, and 承诺达标合格证 when the batch has a
certificate of conformity. The sheet is 3 x 8 labels of 70 x 37 mm, the common A4 24-up sticker sheet
(A4 不干胶 24 格); print it at actual size (100 %), never "fit to page", or the labels drift off the stickers.
Chinese text uses reportlab's built-in CID font STSong-Light, so no font file is needed (the viewer or printer
supplies the glyphs).

The QR code, chosen to survive a phone camera on a small sticker:

- Error correction Q (a quarter of the symbol may be lost): stickers on produce are scuffed, wet, creased or
  wrapped round a bag; L and M fail on a smear over a finder pattern that Q still reads. H would cost one more
  version (smaller modules) for little gain on a flat label; segno still raises the level to H when H fits the
  same version, for free.
- Two segments, the URL prefix in byte mode and the 20 digits in numeric mode (3.3 bits a digit instead of 8):
  one version smaller than all-byte. For ``https://trace.example.cn`` that is version 4 (33 x 33 modules); its
  Digital Link URI, with a GTIN and a 9-character lot, version 6 (41 x 41, 0.63 mm a module).
- Module size: the symbol fills a 31 mm square with its 4-module quiet zone, about 0.75 mm a module at version
  4, and never less than ``MIN_MODULE_MM`` = 0.5 mm. GS1 (General Specifications 5.12.3.1) allows 0.396 to
  0.990 mm for QR codes scanned at the point of sale; 0.5 mm keeps a margin for toner spread on sticker paper,
  older phones and dim market halls, and a ~25 mm symbol is read from 10 to 30 cm without the phone having to
  focus close. A public URL so long that modules would drop below the minimum is refused, not printed badly.
- Drawn as vector rectangles (one filled path, one rectangle per horizontal run of dark modules), so edges stay
  sharp at any printer resolution; a bitmap would be smoothed by some viewers when scaled.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Final

import segno
from reportlab import rl_config
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from codegen.format import group

CJK_FONT: Final = "STSong-Light"
CODE_FONT: Final = "Helvetica-Bold"  # tabular digits: the groups line up from label to label
COLUMNS: Final = 3
ROWS: Final = 8
LABELS_PER_PAGE: Final = COLUMNS * ROWS
LABEL_WIDTH_MM: Final = 70.0
LABEL_HEIGHT_MM: Final = 37.0
QR_BOX_MM: Final = 31.0  # the symbol with its quiet zone
QR_LEFT_MM: Final = 1.0
QR_ERROR: Final = "q"
QR_QUIET_MODULES: Final = 4  # ISO/IEC 18004 minimum quiet zone
MIN_MODULE_MM: Final = 0.5
MAX_MODULE_MM: Final = 0.99  # GS1's upper bound; reached only by very short URLs
TEXT_LEFT_MM: Final = QR_LEFT_MM + QR_BOX_MM + 1.0
TEXT_RIGHT_PAD_MM: Final = 2.0
TEXT_WIDTH_MM: Final = LABEL_WIDTH_MM - TEXT_LEFT_MM - TEXT_RIGHT_PAD_MM
HEADING_PT: Final = 7.0
NAME_PT: Final = 9.5
NAME_MAX_LINES: Final = 2
BADGE_PT: Final = 7.5
CODE_MAX_PT: Final = 8.0
HINT_PT: Final = 5.5
# Text baselines in the text column, in mm from the label's top (heading, name) or bottom (the rest).
HEADING_FROM_TOP_MM: Final = 5.5
NAME_FROM_TOP_MM: Final = 10.0
NAME_LEADING_MM: Final = 4.0
BADGE_BOTTOM_MM: Final = 15.0
BADGE_HEIGHT_MM: Final = 4.4
BADGE_PAD_MM: Final = 1.2
BADGE_BASELINE_MM: Final = 16.3
CODE_BASELINE_MM: Final = 9.5
HINT_BASELINE_MM: Final = 4.5
GREY: Final = 0.35  # secondary text
ELLIPSIS: Final = "…"
NO_LINE_START: Final = frozenset("，。、；：！？）》」』】〕”’,.;:!?)")  # kept at the end of the line before (避头)

HEADING: Final = "产品追溯码"
CERTIFICATE: Final = "承诺达标合格证"
HINT: Final = "手机扫码 查产地·检测·流向"
TITLE: Final = "产品追溯码标签"
TRACE_PATH: Final = "/t/"  # the consumer page of a code: {public_url}/t/{code}

_PAGE_WIDTH, _PAGE_HEIGHT = A4
_SAMPLE_CODE: Final = "4" + "9" * 19  # every code has 20 digits: each needs the same QR version as this one
_SHEET_TOP_MM: Final = (_PAGE_HEIGHT / mm - ROWS * LABEL_HEIGHT_MM) / 2  # 0.5 mm: the 8 rows are centred
_SHEET_LEFT_MM: Final = (_PAGE_WIDTH / mm - COLUMNS * LABEL_WIDTH_MM) / 2


def _register_fonts() -> None:
    if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))


def qr_code(url_prefix: str, code: str) -> segno.QRCode:
    """The QR code of ``url_prefix + code``: the prefix in byte mode, the digits in numeric mode, level Q or better."""
    # A list of segments is supported but not in segno's type hints (maintainer's answer in heuer/segno#76).
    segments = [(url_prefix,), (code,)]
    return segno.make(segments, error=QR_ERROR, micro=False, boost_error=True)  # type: ignore[arg-type]


class LabelSheet:
    """Labels of one batch: ``LabelSheet(public_url=..., product_name=..., has_certificate=...).write(codes, out)``;
    a label's URL is ``public_url`` + ``path`` + code (``path`` ``/t/`` unless given)."""

    __slots__ = ("_has_certificate", "_name_lines", "_url_prefix")

    def __init__(self, *, public_url: str, product_name: str, has_certificate: bool, path: str = TRACE_PATH) -> None:
        _register_fonts()
        self._url_prefix = public_url.rstrip("/") + path
        self._has_certificate = has_certificate
        self._name_lines = _wrap(product_name, CJK_FONT, NAME_PT, TEXT_WIDTH_MM * mm, NAME_MAX_LINES)
        self.module_mm(_SAMPLE_CODE)  # refuse a URL too long for the label before the first page

    def __repr__(self) -> str:
        return f"LabelSheet(url_prefix={self._url_prefix!r}, has_certificate={self._has_certificate})"

    def module_mm(self, code: str) -> float:
        """The printed size of one QR module for ``code``; ValueError when it would be under ``MIN_MODULE_MM``."""
        return self._module_mm(qr_code(self._url_prefix, code).symbol_size(scale=1, border=QR_QUIET_MODULES)[0])

    def _module_mm(self, modules: float) -> float:
        size = min(QR_BOX_MM / modules, MAX_MODULE_MM)
        if size < MIN_MODULE_MM:
            raise ValueError(
                f"the label URL {self._url_prefix!r} needs {modules} QR modules: {size:.2f} mm each on a "
                f"{QR_BOX_MM:g} mm label, under the {MIN_MODULE_MM} mm a phone reads reliably; shorten it"
            )
        return size

    def write(self, codes: Iterable[str], out: BinaryIO | Path | str) -> int:
        """Write the labels of ``codes`` (canonical 20-digit codes), 24 to an A4 page, to ``out``; the page count."""
        canvas = Canvas(str(out) if isinstance(out, Path) else out, pagesize=A4, pageCompression=1)
        canvas.setTitle(TITLE)
        canvas.setCreator("tracecode")
        count = 0
        for count, code in enumerate(codes, start=1):
            slot = (count - 1) % LABELS_PER_PAGE
            if slot == 0 and count > 1:
                canvas.showPage()
            column, row = slot % COLUMNS, slot // COLUMNS
            x = (_SHEET_LEFT_MM + column * LABEL_WIDTH_MM) * mm
            y = _PAGE_HEIGHT - (_SHEET_TOP_MM + (row + 1) * LABEL_HEIGHT_MM) * mm
            self._draw_label(canvas, x, y, code)
        canvas.showPage()
        # Binary Flate streams without the ASCII85 wrapping: a quarter smaller, and reportlab's pure-Python
        # ASCII85 encoder would take longer than drawing the labels.
        use_a85 = rl_config.useA85
        rl_config.useA85 = 0
        try:
            canvas.save()
        finally:
            rl_config.useA85 = use_a85
        return max(1, -(-count // LABELS_PER_PAGE))

    def _draw_label(self, canvas: Canvas, x: float, y: float, code: str) -> None:
        """One label whose lower left corner is at (x, y) points."""
        self._draw_qr(canvas, x + QR_LEFT_MM * mm, y + (LABEL_HEIGHT_MM - QR_BOX_MM) / 2 * mm, code)
        left = x + TEXT_LEFT_MM * mm
        width = TEXT_WIDTH_MM * mm
        top = y + LABEL_HEIGHT_MM * mm
        canvas.setFillGray(GREY)
        canvas.setFont(CJK_FONT, HEADING_PT)
        canvas.drawString(left, top - HEADING_FROM_TOP_MM * mm, HEADING)
        canvas.setFillGray(0)
        canvas.setFont(CJK_FONT, NAME_PT)
        for i, line in enumerate(self._name_lines):
            canvas.drawString(left, top - (NAME_FROM_TOP_MM + i * NAME_LEADING_MM) * mm, line)
        if self._has_certificate:
            badge_width = pdfmetrics.stringWidth(CERTIFICATE, CJK_FONT, BADGE_PT) + 2 * BADGE_PAD_MM * mm
            canvas.setLineWidth(0.6)
            canvas.roundRect(
                left, y + BADGE_BOTTOM_MM * mm, badge_width, BADGE_HEIGHT_MM * mm, BADGE_PAD_MM * mm, stroke=1, fill=0
            )
            canvas.setFont(CJK_FONT, BADGE_PT)
            canvas.drawString(left + BADGE_PAD_MM * mm, y + BADGE_BASELINE_MM * mm, CERTIFICATE)
        grouped = group(code)
        code_pt = min(CODE_MAX_PT, width / pdfmetrics.stringWidth(grouped, CODE_FONT, 1))
        canvas.setFont(CODE_FONT, code_pt)
        canvas.drawString(left, y + CODE_BASELINE_MM * mm, grouped)
        canvas.setFillGray(GREY)
        canvas.setFont(CJK_FONT, HINT_PT)
        canvas.drawString(left, y + HINT_BASELINE_MM * mm, HINT)
        canvas.setFillGray(0)

    def _draw_qr(self, canvas: Canvas, x: float, y: float, code: str) -> None:
        """The symbol of ``code`` with its quiet zone in the ``QR_BOX_MM`` square whose lower left corner is (x, y)."""
        qr = qr_code(self._url_prefix, code)
        matrix = qr.matrix
        modules = len(matrix) + 2 * QR_QUIET_MODULES
        module = self._module_mm(modules) * mm
        left = x + (QR_BOX_MM * mm - modules * module) / 2 + QR_QUIET_MODULES * module
        top = y + QR_BOX_MM * mm - (left - x)
        runs: list[str] = []
        for r, row in enumerate(matrix):
            row_y = top - (r + 1) * module
            c, size = 0, len(row)
            while c < size:
                if not row[c]:
                    c += 1
                    continue
                start = c
                while c < size and row[c]:
                    c += 1
                runs.append(f"{left + start * module:.2f} {row_y:.2f} {(c - start) * module:.2f} {module:.2f} re")
        # One filled path of rectangles, written as PDF operators: reportlab's path object formats each number
        # through a slow generic routine and would cost more than the QR code itself.
        canvas.setFillGray(0)
        canvas.addLiteral("\n".join(runs) + "\nf")


def _wrap(text: str, font: str, size: float, width: float, max_lines: int) -> list[str]:
    """``text`` broken into at most ``max_lines`` lines of ``width`` points, the last cut with an ellipsis."""
    lines: list[str] = []
    line = ""
    for ch in text:
        if pdfmetrics.stringWidth(line + ch, font, size) <= width or (line and ch in NO_LINE_START):
            line += ch
            continue
        lines.append(line)
        line = ch
        if len(lines) == max_lines:
            break
    else:
        if line:
            lines.append(line)
        return lines
    last = lines[-1]
    while last and pdfmetrics.stringWidth(last + ELLIPSIS, font, size) > width:
        last = last[:-1]
    lines[-1] = last + ELLIPSIS
    return lines
