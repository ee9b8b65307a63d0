"""Bulk import from CSV: bad rows reported by line and reason, nothing half-imported, the same from the command line."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from resolver.api import imports
from resolver.ops.settings import Settings
from resolver.state import app_worker
from tests.conftest import Service, random_credit_code
from tests.helpers import TRACECODE, register_producer, subprocess_env

DATONG, HAIXI, DELINGHA = "630121", "632800", "632802"
PRODUCER_HEADER = "credit_code,name,kind,region_code,contact"
CERTIFICATION_HEADER = "kind,number,credit_code,product_name,product_category,valid_from,valid_to"
CSV = {"Content-Type": "text/csv; charset=utf-8"}


def _wrong_check_character(credit_code: str) -> str:
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    return credit_code[:17] + alphabet[(alphabet.index(credit_code[17]) + 1) % len(alphabet)]


def _csv(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


async def _import(
    service: Service, kind: str, data: bytes, headers: dict[str, str] | None = None, **params: str
) -> httpx.Response:
    return await service.client.post(
        f"/api/v1/imports/{kind}", content=data, params=params, headers={**(headers or service.admin_headers), **CSV}
    )


async def _registered(service: Service, *credit_codes: str) -> set[str]:
    rows = await app_worker(service.app).pool.fetch(
        "SELECT credit_code::text FROM producers WHERE credit_code = ANY ($1::char(18)[])", list(credit_codes)
    )
    return {row["credit_code"] for row in rows}


def _errors(body: dict[str, Any]) -> list[tuple[int, str | None, str]]:
    return [(e["line"], e["field"], e["reason"]) for e in body["errors"]]


# --- producers -----------------------------------------------------------------------------------


async def test_producers_import_with_an_excel_bom(service: Service) -> None:
    codes = [random_credit_code(DATONG) for _ in range(3)]
    data = b"\xef\xbb\xbf" + _csv(
        PRODUCER_HEADER,
        f"{codes[0]},大通县牦牛养殖合作社,cooperative,{DATONG},0971-2700001",
        f'{codes[1].lower()},"青海高原牧业有限公司, 大通分公司",企业,{DATONG},',
        "",  # blank lines are allowed
        f'{codes[2]},德令哈枸杞家庭农场,家庭农场,{DELINGHA},"电话：\n0977-8200001"',
    )

    response = await _import(service, "producers", data)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["rows"], body["imported"], body["skipped"], body["error_count"]) == (3, 3, 0, 0)
    producer = (await service.client.get(f"/api/v1/producers/{codes[1]}", headers=service.admin_headers)).json()
    assert (producer["name"], producer["kind"]) == ("青海高原牧业有限公司, 大通分公司", "enterprise")
    farm = (await service.client.get(f"/api/v1/producers/{codes[2]}", headers=service.admin_headers)).json()
    assert (farm["kind"], farm["region_code"], farm["contact"]) == ("family_farm", DELINGHA, "电话：\n0977-8200001")


def _file_with_bad_rows(good: list[str], taken: str) -> tuple[bytes, list[tuple[int, str | None, str]]]:
    """A producers file: the good rows, and bad ones with the (line, field, reason) each must be reported with."""
    data = _csv(
        PRODUCER_HEADER,                                                            # line 1
        f"{good[0]},合作社一,cooperative,{DATONG},",                                  # 2
        f"{_wrong_check_character(good[1])},合作社二,cooperative,{DATONG},",           # 3: check character
        f"{good[1]},合作社二,cooperative,999999,",                                    # 4: no such region
        f"{good[2]},合作社三,cooperative,{DATONG},",                                  # 5
        f"{good[0]},合作社一（重复）,cooperative,{DATONG},",                            # 6: repeats line 2
        f"{random_credit_code()},,farmer,63012,",                                     # 7: name, kind, region code
        f"{random_credit_code()},合作社四,cooperative",                                # 8: a column short
        f"{random_credit_code()},青海省,enterprise,630000,",                          # 9: a province
        f"{taken},已登记的合作社,cooperative,{DATONG},",                               # 10: registered: skipped
    )  # fmt: skip
    expected = [
        (3, "credit_code", "invalid_credit_code"),
        (4, "region_code", "unknown_region"),
        (6, "credit_code", "duplicate_in_file"),
        (7, "name", "required"),
        (7, "kind", "invalid_kind"),
        (7, "region_code", "invalid_region_code"),
        (8, None, "column_count"),
        (9, "region_code", "region_not_county"),
    ]
    return data, expected


async def test_a_file_with_bad_rows_imports_nothing(service: Service) -> None:
    good = [random_credit_code(DATONG) for _ in range(3)]
    taken = await register_producer(service, region=DATONG)
    data, expected = _file_with_bad_rows(good, taken)

    response = await _import(service, "producers", data)

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "import_rejected" and body["imported"] == 0
    assert _errors(body) == expected
    assert body["error_count"] == len(expected) and body["rows"] == 9
    assert body["skipped_lines"] == [10]
    assert all(e["message"] for e in body["errors"])
    assert next(e for e in body["errors"] if e["line"] == 6)["ref_line"] == 2
    assert await _registered(service, *good) == set()


async def test_good_rows_mode_imports_the_good_rows(service: Service) -> None:
    good = [random_credit_code(DATONG) for _ in range(3)]
    taken = await register_producer(service, region=DATONG)
    data, expected = _file_with_bad_rows(good, taken)

    response = await _import(service, "producers", data, mode="good_rows")
    again = await _import(service, "producers", data, mode="good_rows")

    assert response.status_code == 200
    body = response.json()
    assert (body["imported"], body["skipped"], body["error_count"]) == (2, 1, len(expected))
    assert _errors(body) == expected
    assert await _registered(service, *good) == {good[0], good[2]}
    assert (again.json()["imported"], again.json()["skipped"]) == (0, 3)


async def test_dry_run_writes_nothing(service: Service) -> None:
    code = random_credit_code(DATONG)

    response = await _import(
        service, "producers", _csv(PRODUCER_HEADER, f"{code},合作社,cooperative,{DATONG},"), dry_run="1"
    )

    assert response.status_code == 200
    assert (response.json()["dry_run"], response.json()["imported"]) == (True, 1)
    assert await _registered(service, code) == set()


async def test_regulator_imports_only_its_region(service: Service) -> None:
    haixi = await _token(service, "regulator", HAIXI)
    inside, outside = random_credit_code(DELINGHA), random_credit_code(DATONG)
    data = _csv(PRODUCER_HEADER, f"{inside},合作社,cooperative,{DELINGHA},", f"{outside},合作社,cooperative,{DATONG},")

    rejected = await _import(service, "producers", data, haixi)
    partial = await _import(service, "producers", data, haixi, mode="good_rows")

    assert _errors(rejected.json()) == [(3, "region_code", "out_of_scope")]
    assert partial.json()["imported"] == 1
    assert await _registered(service, inside, outside) == {inside}


async def _token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def test_only_admins_and_regulators_import(service: Service) -> None:
    producer = await _token(service, "producer", random_credit_code())
    data = _csv(PRODUCER_HEADER)

    as_producer = await _import(service, "producers", data, producer)
    anonymous = await service.client.post("/api/v1/imports/producers", content=data, headers=CSV)

    assert as_producer.status_code == 403 and anonymous.status_code == 401


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        pytest.param(_csv(PRODUCER_HEADER, "91630121MA7H8Q2K1C,大通合作社,cooperative,630121,").replace(
            "大通合作社".encode(), "大通合作社".encode("gbk")), "text/csv", 400, "bad_encoding", id="gbk"),
        pytest.param(_csv(PRODUCER_HEADER, '"91630121MA7H8Q2K1C,x'), "text/csv", 400, "bad_csv", id="open-quote"),
        pytest.param(_csv("credit_code,name,kind"), "text/csv", 422, "bad_header", id="missing-column"),
        pytest.param(_csv(PRODUCER_HEADER + ",licence"), "text/csv", 422, "bad_header", id="unknown-column"),
        pytest.param(b"", "text/csv", 422, "empty_file", id="empty"),
        pytest.param(b"\n\n", "text/csv", 422, "empty_file", id="blank"),
        pytest.param(_csv(PRODUCER_HEADER), "application/json", 415, "unsupported_media_type", id="json"),
        pytest.param(_csv(PRODUCER_HEADER), "text/csv; charset=gbk", 415, "unsupported_media_type", id="charset"),
    ],
)  # fmt: skip
async def test_unreadable_files_are_problems(
    service: Service, data: bytes, content_type: str, status: int, code: str
) -> None:
    response = await service.client.post(
        "/api/v1/imports/producers", content=data, headers={**service.admin_headers, "Content-Type": content_type}
    )

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_bad_encoding_names_the_line(service: Service) -> None:
    data = _csv(PRODUCER_HEADER, f"{random_credit_code()},合作社,cooperative,{DATONG},") + b"x,\xff\r\n"

    response = await _import(service, "producers", data)

    assert response.status_code == 400 and response.json()["line"] == 3


async def test_too_large_a_file_is_refused(service: Service) -> None:
    data = _csv(PRODUCER_HEADER) + b"x" * imports.MAX_IMPORT_BYTES

    response = await _import(service, "producers", data)

    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


# --- certifications ------------------------------------------------------------------------------


async def test_certifications_import_and_report_bad_rows(service: Service) -> None:
    producer = await register_producer(service, region=DELINGHA)
    unknown = random_credit_code(DELINGHA)
    numbers = [f"LB-{secrets.token_hex(4).upper()}" for _ in range(3)]
    data = _csv(
        CERTIFICATION_HEADER,                                                      # line 1
        f"green,{numbers[0]},{producer},柴达木枸杞,goji,2025-03-01,2028-02-28",        # 2
        f"地理标志,{numbers[1]},{producer},,,2024/1/5,2034/1/4",                     # 3: producer-wide
        f"organic,{numbers[0]},{producer},柴达木枸杞,枸杞,2025-03-01,2026-02-28",     # 4: same number, other kind
        f"green,{numbers[0]},{producer},柴达木枸杞,goji,2025-03-01,2028-02-28",        # 5: repeats line 2
        f"green,{numbers[2]},{unknown},柴达木枸杞,goji,2025-03-01,2028-02-28",         # 6: unknown producer
        f"halal,X-1,{producer},柴达木枸杞,goji,2025-03-01,2028-02-28",                # 7: kind
        f"green,X-2,{producer},柴达木枸杞,,2025-03-01,2028-02-28",                    # 8: category missing
        f"green,X-3,{producer},黑枸杞,caviar,2025-02-30,2024-01-01",                  # 9: category, date
        f"green,X-4,{producer},,,2025-03-01,2024-01-01",                             # 10: reversed
    )  # fmt: skip
    expected = [
        (5, "number", "duplicate_in_file"),
        (6, "credit_code", "unknown_producer"),
        (7, "kind", "invalid_kind"),
        (8, "product_category", "product_incomplete"),
        (9, "product_category", "invalid_category"),
        (9, "valid_from", "invalid_date"),
        (10, "valid_to", "dates_reversed"),
    ]

    rejected = await _import(service, "certifications", data)
    imported = await _import(service, "certifications", data, mode="good_rows")

    assert rejected.status_code == 422 and _errors(rejected.json()) == expected
    assert imported.status_code == 200 and _errors(imported.json()) == expected
    assert (imported.json()["imported"], imported.json()["products_created"]) == (3, 1)
    listed = (
        await service.client.get(f"/api/v1/certifications?credit_code={producer}", headers=service.admin_headers)
    ).json()
    certifications = {(c["kind"], c["number"]): c for c in listed["items"]}
    assert set(certifications) == {("green", numbers[0]), ("gi", numbers[1]), ("organic", numbers[0])}
    assert certifications[("gi", numbers[1])]["product"] is None
    assert certifications[("gi", numbers[1])]["valid_from"] == "2024-01-05"
    assert certifications[("green", numbers[0])]["product"]["name"] == "柴达木枸杞"


# --- the command line ----------------------------------------------------------------------------


def _tracecode(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACECODE, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_import_from_the_command_line(settings: Settings, tmp_path: Path) -> None:
    good = [random_credit_code(DATONG) for _ in range(2)]
    bad = tmp_path / "producers.csv"
    bad.write_bytes(
        _csv(PRODUCER_HEADER, f"{good[0]},合作社,cooperative,{DATONG},", f"{good[1]},合作社,cooperative,999999,")
    )
    env = subprocess_env(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url)

    rejected = _tracecode(env, "import", "producers", str(bad))
    partial = _tracecode(env, "import", "producers", str(bad), "--good-rows")
    missing = _tracecode(env, "import", "producers", str(tmp_path / "none.csv"))

    assert rejected.returncode == 1 and "rejected, nothing imported" in rejected.stdout
    assert "line 3, region_code: unknown_region" in rejected.stdout
    assert partial.returncode == 1 and "imported 1," in partial.stdout
    assert missing.returncode == 1 and "cannot read" in missing.stderr
