from __future__ import annotations

import csv
from collections import Counter
from importlib.resources import files

import pytest

from schema.regions import Region, load_regions, regions_by_code, rollup


@pytest.fixture(scope="module")
def regions() -> list[Region]:
    return load_regions()


@pytest.fixture(scope="module")
def by_code(regions: list[Region]) -> dict[str, Region]:
    return {r.code: r for r in regions}


def test_csv_shape() -> None:
    text = (files("schema") / "data" / "regions.csv").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "code,name,level,parent_code"
    rows = list(csv.reader(lines[1:]))
    assert all(len(r) == 4 for r in rows)
    codes = [r[0] for r in rows]
    assert codes == sorted(codes), "rows must be sorted by code"
    assert len(codes) == len(set(codes))


def test_every_parent_exists_one_level_up(by_code: dict[str, Region]) -> None:
    for r in by_code.values():
        if r.level == 1:
            assert r.parent_code is None
            assert r.code.endswith("0000")
            continue
        assert r.parent_code is not None
        parent = by_code[r.parent_code]
        assert parent.level == r.level - 1
        # GB/T 2260 codes nest: a child shares its parent's significant digits.
        assert r.code[: 2 * parent.level] == parent.code[: 2 * parent.level]
        assert r.code != parent.code


def test_counts_in_sane_ranges(regions: list[Region]) -> None:
    levels = Counter(r.level for r in regions)
    assert set(levels) == {1, 2, 3}
    assert 31 <= levels[1] <= 34
    assert 330 <= levels[2] <= 360
    assert 2800 <= levels[3] <= 3000


def test_rollup_fields_consistent(regions: list[Region], by_code: dict[str, Region]) -> None:
    for r in regions:
        assert by_code[r.province_code].level == 1
        if r.level == 1:
            assert r.prefecture_code is None and r.province_code == r.code
        else:
            assert r.prefecture_code is not None
            assert by_code[r.prefecture_code].level == 2
            assert rollup(r.code) == (r.prefecture_code, r.province_code)


def test_no_nbs_only_or_placeholder_rows(by_code: dict[str, Region]) -> None:
    # NBS functional zones (xxxx7x), 大兴安岭 internal districts, pseudo county rows of cities
    # without districts and 市辖区 placeholder counties are not GB/T 2260 county-level units.
    for code in ("130171", "320576", "620171", "232761", "632857", "441900", "620201", "130101"):
        r = by_code.get(code)
        assert r is None or r.level != 3, code
    assert not [r for r in by_code.values() if r.level == 3 and r.name == "市辖区"]
    assert "710000" not in by_code and "810000" not in by_code and "820000" not in by_code


def test_qinghai(by_code: dict[str, Region]) -> None:
    datong = by_code["630121"]
    assert (datong.name, datong.level) == ("大通回族土族自治县", 3)
    assert (datong.prefecture_code, datong.province_code) == ("630100", "630000")
    assert by_code["630100"].name == "西宁市"
    assert by_code["630000"].name == "青海省"

    assert by_code["632802"].name == "德令哈市"
    assert rollup("632802") == ("632800", "630000")
    assert by_code["632800"].name == "海西蒙古族藏族自治州"

    # Changes since 2018: 湟中县 -> 湟中区 (2019), 同仁县 -> 同仁市 (2020), 茫崖市 (2018).
    assert by_code["632301"].name == "同仁市"
    assert by_code["630106"].name == "湟中区"
    assert by_code["632701"].name == "玉树市"
    assert by_code["632803"].name == "茫崖市"
    assert "630122" not in by_code
    assert "632321" not in by_code

    qinghai = [r for r in by_code.values() if r.province_code == "630000"]
    assert Counter(r.level for r in qinghai) == {1: 1, 2: 8, 3: 44}


def test_municipality_and_direct_county_rollup(by_code: dict[str, Region]) -> None:
    assert by_code["110105"].name == "朝阳区"
    assert rollup("110105") == ("110100", "110000")
    assert rollup("500229") == ("500200", "500000")  # 城口县 under 重庆市 县
    assert rollup("429004") == ("429000", "420000")  # 仙桃市
    assert rollup("469001") == ("469000", "460000")  # 五指山市
    assert rollup("419001") == ("419000", "410000")  # 济源市
    assert rollup("441900") == ("441900", "440000")  # 东莞市: prefecture without counties
    assert rollup("632800") == ("632800", "630000")


def test_rollup_errors() -> None:
    with pytest.raises(KeyError):
        rollup("630122")
    with pytest.raises(KeyError):
        rollup("nope")
    with pytest.raises(ValueError):
        rollup("630000")


def test_regions_by_code_is_read_only() -> None:
    m = regions_by_code()
    assert m["632802"].name == "德令哈市"
    with pytest.raises(TypeError):
        m["x"] = m["632802"]  # type: ignore[index]
