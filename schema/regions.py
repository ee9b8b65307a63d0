"""GB/T 2260 administrative divisions of mainland China, shipped as ``schema/data/regions.csv``.

Three levels, matching the ``regions`` table (see ``schema/data/REGIONS.md`` for the source,
edition and representation choices):

* level 1 - province-level unit (省, 自治区, 直辖市), code ``PP0000``, no parent;
* level 2 - prefecture-level unit (地级市, 自治州, 地区, 盟) and the GB/T 2260 grouping rows
  ``PP0100 市辖区`` / ``500200 县`` of the municipalities and ``PP9000 省直辖县级行政区划`` of the
  provinces with directly administered county-level units; code ``PPCC00``, parent = province;
* level 3 - county-level unit (市辖区, 县, 县级市, 自治县, 旗, 自治旗, 特区, 林区), parent = its
  level-2 row.

Roll-up is by parent links, never by string slicing, so it stays right for any code.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from types import MappingProxyType

__all__ = ["Region", "load_regions", "regions_by_code", "regions_csv_bytes", "rollup"]

_LEVELS = (1, 2, 3)


@dataclass(frozen=True, slots=True)
class Region:
    """One row of ``regions.csv`` plus its computed roll-up.

    ``prefecture_code`` is ``None`` for a level-1 row, the row's own code for level 2, and the
    parent's code for level 3. ``province_code`` is the level-1 ancestor (own code for level 1).
    """

    code: str
    name: str
    level: int
    parent_code: str | None
    prefecture_code: str | None
    province_code: str


def regions_csv_bytes() -> bytes:
    """The shipped file as it is (its hash tells a migration whether the table needs reloading)."""
    return (files("schema") / "data" / "regions.csv").read_bytes()


@cache
def _load() -> tuple[Region, ...]:
    text = regions_csv_bytes().decode("utf-8")
    raw: dict[str, tuple[str, int, str | None]] = {}
    for rec in csv.DictReader(io.StringIO(text)):
        code = rec["code"]
        level = int(rec["level"])
        if len(code) != 6 or not code.isdigit() or level not in _LEVELS:
            raise ValueError(f"regions.csv: bad row {rec!r}")
        if code in raw:
            raise ValueError(f"regions.csv: duplicate code {code}")
        raw[code] = (rec["name"], level, rec["parent_code"] or None)

    out: list[Region] = []
    for code, (name, level, parent) in raw.items():
        if (parent is None) != (level == 1):
            raise ValueError(f"regions.csv: {code} at level {level} has parent {parent!r}")
        if parent is not None:
            if parent not in raw:
                raise ValueError(f"regions.csv: {code} has unknown parent {parent}")
            if raw[parent][1] != level - 1:
                raise ValueError(f"regions.csv: {code} (level {level}) has parent {parent} at level {raw[parent][1]}")
        if level == 1:
            prefecture, province = None, code
        elif level == 2:
            assert parent is not None
            prefecture, province = code, parent
        else:
            assert parent is not None
            grandparent = raw[parent][2]
            assert grandparent is not None
            prefecture, province = parent, grandparent
        out.append(Region(code, name, level, parent, prefecture, province))
    out.sort(key=lambda r: r.code)
    return tuple(out)


@cache
def _index() -> Mapping[str, Region]:
    return MappingProxyType({r.code: r for r in _load()})


def load_regions() -> list[Region]:
    """All regions, sorted by code (a fresh list each call; the rows are parsed once and cached).

    Raises ``ValueError`` if the shipped CSV is malformed or not referentially intact.
    """
    return list(_load())


def regions_by_code() -> Mapping[str, Region]:
    """Read-only mapping code -> Region, for validating a region code (``code in regions_by_code()``)."""
    return _index()


def rollup(code: str) -> tuple[str, str]:
    """Return ``(prefecture_code, province_code)`` for a level-2 or level-3 region code.

    * level 3 (county-level): ``(parent level-2 code, province code)``,
      e.g. ``"632802"`` (德令哈市) -> ``("632800", "630000")``;
      a district of a municipality rolls up to the municipality's ``PP0100 市辖区`` row,
      e.g. ``"110105"`` -> ``("110100", "110000")``, and a directly administered county-level city
      to its province's ``PP9000`` row, e.g. ``"429004"`` (仙桃市) -> ``("429000", "420000")``.
    * level 2 (prefecture-level): ``(code itself, province code)``, e.g. ``"441900"`` -> ``("441900", "440000")``.

    Raises ``KeyError`` for a code that is not in the data (not a current GB/T 2260 code of
    mainland China at province/prefecture/county level), and ``ValueError`` for a province-level
    code, which has no prefecture.
    """
    region = _index().get(code)
    if region is None:
        raise KeyError(code)
    if region.prefecture_code is None:
        raise ValueError(f"{code} ({region.name}) is province-level and has no prefecture")
    return region.prefecture_code, region.province_code
