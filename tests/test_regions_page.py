"""The regulator's page of a region, served by a real `tracecode serve` on a database of its own, read as
HTML and rendered in headless Chromium (a Debian package: `apt-get install chromium`; skipped without it)."""

from __future__ import annotations

import re
import secrets
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Servers, migrated_database, random_credit_code
from tests.helpers import batch_body, serving_as_admin

HAIBEI = "632200"  # 海北藏族自治州: 门源 632221, 祁连 632222, 海晏 632223, 刚察 632224
MENYUAN, QILIAN, HAIYAN, GANGCHA = "632221", "632222", "632223", "632224"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_TIMEOUT_S = 90
WINDOW = (800, 1600)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class Site:
    base: str
    recalled_code: str


@pytest.fixture(scope="module")
async def page_database(servers: Servers) -> AsyncIterator[str]:
    async with migrated_database(servers, "tracecode_page", code_partitions=4) as url:
        yield url


def _seed(client: httpx.Client) -> str:
    """海北州: 门源 4 of 5 traced, 祁连 1 of 4 with a certified producer not traced, 刚察 2 of 2, 海晏 none;
    a batch of 门源 recalled. Returns the recalled batch's code."""
    recalled = ""
    for region, traced, untraced in ((MENYUAN, 4, 1), (QILIAN, 1, 3), (GANGCHA, 2, 0)):
        for i in range(traced + untraced):
            credit_code = random_credit_code(region)
            response = client.post(
                "/api/v1/producers",
                json={"credit_code": credit_code, "name": f"海北牧业合作社{secrets.token_hex(2)}",
                      "kind": "cooperative", "region_code": region},
            )  # fmt: skip
            assert response.status_code == 201, response.text
            if i < traced:
                batch = client.post("/api/v1/batches", json=batch_body(credit_code))
                assert batch.status_code == 201, batch.text
                recalled = recalled or batch.json()["trace_code"]
            elif region == QILIAN and i == traced:
                certification = client.post(
                    "/api/v1/certifications",
                    json={"kind": "gi", "number": f"AGI-{secrets.token_hex(3)}", "credit_code": credit_code,
                          "valid_from": "2024-01-01", "valid_to": "2030-12-31"},
                )  # fmt: skip
                assert certification.status_code == 201, certification.text
    recall = client.post(f"/api/v1/batches/{recalled}/recall", json={"reason": "兽药残留超标"})
    assert recall.status_code == 200, recall.text
    return recalled


@pytest.fixture(scope="module")
def site(page_database: str, servers: Servers) -> Iterator[Site]:
    with serving_as_admin(page_database, servers.redis_url) as (base, headers):
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            recalled = _seed(client)
        yield Site(base, recalled)


def _counties(html: str) -> dict[str, str]:
    """data-county -> data-meets-line of each bar group."""
    return dict(re.findall(r'<g class="county" data-county="(\d{6})"[^>]*data-meets-line="(true|false)"', html))


def test_the_page_shows_each_county_against_the_line(site: Site) -> None:
    response = httpx.get(f"{site.base}/regions/{HAIBEI}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert _counties(html) == {MENYUAN: "true", QILIAN: "false", HAIYAN: "false", GANGCHA: "true"}
    assert len(re.findall(r'<rect class="bar (meets|below)"', html)) == 3  # 海晏 has no producers: no bar
    assert 'class="line"' in html and "80%" in html
    assert "追溯覆盖率 63.6%（7/11），未达到 80% 要求" in html
    assert re.search(rf'data-unlisted-county="{QILIAN}"><td>祁连县</td><td class="num">1</td>', html)
    assert "兽药残留超标" in html and f'href="/t/{site.recalled_code}"' in html
    assert "<script" not in html


def test_a_county_page_and_an_unknown_region(site: Site) -> None:
    county = httpx.get(f"{site.base}/regions/{MENYUAN}")
    unknown = httpx.get(f"{site.base}/regions/999999")

    assert _counties(county.text) == {MENYUAN: "true"}
    assert "追溯覆盖率 80.0%（4/5），达到 80% 要求" in county.text
    assert unknown.status_code == 404 and "行政区划不存在" in unknown.text
    assert unknown.headers["content-type"].startswith("text/html")


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args],
        capture_output=True, timeout=BROWSER_TIMEOUT_S, check=False,
    )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_the_page_renders_in_headless_chromium(site: Site, tmp_path: Path) -> None:
    url = f"{site.base}/regions/{HAIBEI}"
    screenshot = tmp_path / "region.png"

    shot = _chromium(f"--screenshot={screenshot}", url, profile=tmp_path / "profile-shot")
    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile-dom")

    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    png = screenshot.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert struct.unpack(">II", png[16:24]) == WINDOW  # IHDR: width, height
    assert len(png) > 20_000, "the screenshot is (nearly) blank"
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    rendered = dom.stdout.decode()
    assert _counties(rendered) == {MENYUAN: "true", QILIAN: "false", HAIYAN: "false", GANGCHA: "true"}
    assert len(re.findall(r'<rect class="bar (meets|below)"', rendered)) == 3
