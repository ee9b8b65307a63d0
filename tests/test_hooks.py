"""The four hooks: coverage against the 80 % line, unlisted certifications, eligibility.

Coverage counts every producer of a region, so these tests run on a database of their own (a copy
of a migrated template, one per test): no other test's producers are in their counties.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from resolver.api import hooks
from resolver.app import create_app
from resolver.ops.settings import Settings
from resolver.scan.documents import CHINA_TZ, china_today
from resolver.state import app_worker
from schema.migrate import migrate
from tests.conftest import QueryLog, Servers, Service, create_database, drop_database, random_credit_code
from tests.helpers import register_batch, register_producer

MENYUAN, QILIAN, HAIYAN = "632221", "632222", "632223"  # counties of 海北州
HAIBEI, QINGHAI = "632200", "630000"
DONGGUAN, GUANGDONG = "441900", "440000"  # a prefecture-level city without counties


@pytest.fixture(scope="module")
async def template_database(servers: Servers) -> AsyncIterator[str]:
    name = f"tracecode_hooks_template_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(await create_database(servers, name))
    try:
        await migrate(conn, code_partitions=4)
    finally:
        await conn.close()
    yield name
    await drop_database(servers, name)


@pytest.fixture
async def own_service(servers: Servers, template_database: str, redis_url: str) -> AsyncIterator[Service]:
    """A service on an empty database of its own, copied from the migrated template."""
    name = f"tracecode_hooks_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(servers.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    settings = Settings(
        database_url=servers.database(name),
        redis_url=redis_url,
        secret=secrets.token_bytes(32),
        admin_token="admin-" + secrets.token_hex(16),
        public_url="https://trace.example.cn",
        is_dev_secret=False,
    )
    log = QueryLog()
    app = create_app(settings, query_logger=log)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Service(app, client, settings, {"Authorization": f"Bearer {settings.admin_token}"}, log)
    finally:
        await drop_database(servers, name)


async def _token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def _producers(
    service: Service, region: str, *, traced: int, untraced: int, kind: str = "cooperative"
) -> list[str]:
    """Register traced + untraced producers of `kind` in `region`; the first `traced` get a batch each."""
    codes = [await register_producer(service, region=region, kind=kind) for _ in range(traced + untraced)]
    for code in codes[:traced]:
        await register_batch(service, code)
    return codes


async def _coverage(service: Service, region: str, **params: str) -> dict[str, Any]:
    response = await service.client.get(f"/api/v1/regions/{region}/coverage", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _age(service: Service, credit_code: str, *, months: int = 13) -> None:
    """Move the producer's batches `months` back, with last_issued_at as a registration that old left it."""
    async with app_worker(service.app).pool.acquire() as conn:
        await conn.execute(
            """
            UPDATE batches b SET created_at = b.created_at - make_interval(months => $2)
              FROM producers p WHERE p.id = b.producer_id AND p.credit_code = $1
            """,
            credit_code,
            months,
        )
        await conn.execute(
            """
            UPDATE producers p SET last_issued_at = (SELECT max(b.created_at) FROM batches b WHERE b.producer_id = p.id)
             WHERE p.credit_code = $1
            """,
            credit_code,
        )


async def _certify(service: Service, credit_code: str, product: dict[str, str] | None, **overrides: Any) -> int:
    today = dt.date.today()
    body = {
        "kind": "green",
        "number": f"LB-{secrets.token_hex(5).upper()}",
        "credit_code": credit_code,
        "product": product,
        "valid_from": (today - dt.timedelta(days=300)).isoformat(),
        "valid_to": (today + dt.timedelta(days=700)).isoformat(),
        **overrides,
    }
    response = await service.client.post("/api/v1/certifications", json=body, headers=service.admin_headers)
    assert response.status_code == 201, response.text
    certification_id: int = response.json()["id"]
    return certification_id


# --- coverage ------------------------------------------------------------------------------------


async def test_county_with_four_of_five_traced_meets_the_line(own_service: Service) -> None:
    await _producers(own_service, MENYUAN, traced=3, untraced=1)
    await _producers(own_service, MENYUAN, traced=1, untraced=0, kind="enterprise")
    # Family farms and individuals are not among the producers the line is measured on.
    await _producers(own_service, MENYUAN, traced=0, untraced=2, kind="family_farm")

    coverage = await _coverage(own_service, MENYUAN)

    assert coverage["registered"] == 5 and coverage["traced"] == 4
    assert coverage["ratio"] == pytest.approx(0.8)
    assert coverage["meets_line"] is True
    assert coverage["counted_kinds"] == ["enterprise", "cooperative"]
    assert coverage["line"] == 0.8 and coverage["traced_window_months"] == 12
    assert coverage["region_name"] == "门源回族自治县"


async def test_county_with_three_of_five_traced_misses_the_line(own_service: Service) -> None:
    await _producers(own_service, QILIAN, traced=3, untraced=2)

    coverage = await _coverage(own_service, QILIAN)

    assert (coverage["registered"], coverage["traced"], coverage["meets_line"]) == (5, 3, False)
    assert coverage["ratio"] == pytest.approx(0.6)


async def test_prefecture_and_province_aggregate_their_counties(own_service: Service) -> None:
    await _producers(own_service, MENYUAN, traced=4, untraced=1)
    await _producers(own_service, QILIAN, traced=1, untraced=4)
    await _producers(own_service, HAIBEI, traced=1, untraced=0)  # registered on the prefecture itself (州本级)

    prefecture = await _coverage(own_service, HAIBEI, breakdown="1")
    province = await _coverage(own_service, QINGHAI)

    assert (prefecture["registered"], prefecture["traced"], prefecture["meets_line"]) == (11, 6, False)
    assert (province["registered"], province["traced"]) == (11, 6)
    assert "counties" not in province
    counties = {c["region_code"]: c for c in prefecture["counties"]}
    assert set(counties) == {HAIBEI, MENYUAN, QILIAN, HAIYAN, "632224"}
    assert counties[MENYUAN] | {"region_name": None, "tags": None} == {
        "region_code": MENYUAN, "region_name": None, "level": 3, "direct": False,
        "registered": 5, "traced": 4, "ratio": pytest.approx(0.8), "meets_line": True,
        "products_registered": 4, "products_traced": 4, "product_ratio": 1.0, "tags": None,
    }  # fmt: skip
    assert (counties[QILIAN]["traced"], counties[QILIAN]["meets_line"]) == (1, False)
    assert counties[HAIBEI]["direct"] is True and counties[HAIBEI]["registered"] == 1
    assert counties[HAIYAN] | {"region_name": None, "tags": None} == {
        "region_code": HAIYAN, "region_name": None, "level": 3, "direct": False,
        "registered": 0, "traced": 0, "ratio": None, "meets_line": False,
        "products_registered": 0, "products_traced": 0, "product_ratio": None, "tags": None,
    }  # fmt: skip


async def test_prefecture_level_city_without_counties_counts_its_own_producers(own_service: Service) -> None:
    await _producers(own_service, DONGGUAN, traced=4, untraced=1, kind="enterprise")

    city = await _coverage(own_service, DONGGUAN, breakdown="1")
    province = await _coverage(own_service, GUANGDONG, breakdown="1")

    assert (city["registered"], city["traced"], city["meets_line"]) == (5, 4, True)
    assert [c["region_code"] for c in city["counties"]] == [DONGGUAN]
    assert (province["registered"], province["traced"]) == (5, 4)
    dongguan = next(c for c in province["counties"] if c["region_code"] == DONGGUAN)
    assert dongguan["direct"] is False and dongguan["registered"] == 5
    assert all(c["level"] in (2, 3) for c in province["counties"])


async def test_producer_whose_only_batch_is_older_than_12_months_is_untraced(own_service: Service) -> None:
    old, recent = await _producers(own_service, HAIYAN, traced=2, untraced=0)
    assert (await _coverage(own_service, HAIYAN))["traced"] == 2

    await _age(own_service, old)

    coverage = await _coverage(own_service, HAIYAN)
    assert (coverage["registered"], coverage["traced"], coverage["meets_line"]) == (2, 1, False)
    eligibility = (await own_service.client.get(f"/api/v1/eligibility/{old}")).json()
    assert eligibility["traced"] is False
    assert [r["code"] for r in eligibility["reasons"]] == ["lapsed"]
    assert eligibility["eligible"] == {"brand": False, "fair": False}

    await register_batch(own_service, old)  # a new batch makes it traced again

    assert (await _coverage(own_service, HAIYAN))["traced"] == 2


async def test_coverage_is_one_query_and_public(own_service: Service) -> None:
    await _producers(own_service, MENYUAN, traced=1, untraced=0)
    own_service.query_log.queries.clear()

    response = await own_service.client.get(f"/api/v1/regions/{QINGHAI}/coverage?breakdown=1")  # no token

    assert response.status_code == 200
    assert own_service.query_log.count(hooks.COVERAGE_BY_REGION) == 1


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        pytest.param("/api/v1/regions/999999/coverage", 404, "unknown_region", id="unknown"),
        pytest.param("/api/v1/regions/63a121/coverage", 404, "unknown_region", id="malformed"),
        pytest.param("/api/v1/regions/630000/coverage?breakdown=maybe", 422, "invalid_input", id="bad-flag"),
    ],
)
async def test_coverage_errors_are_problems(own_service: Service, path: str, status: int, code: str) -> None:
    response = await own_service.client.get(path)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def history(
    service: Service, credit_code: str, *, registered_on: dt.date, issued_on: tuple[dt.date, ...] = ()
) -> None:
    """Rewrite a producer's past: registered (with its products) on `registered_on`, codes issued on each day of
    `issued_on` (its batches on the last of them); last_issued_at as that history left it."""
    noon = dt.time(12, tzinfo=CHINA_TZ)
    last = dt.datetime.combine(max(issued_on), noon) if issued_on else None
    async with app_worker(service.app).pool.acquire() as conn, conn.transaction():
        producer_id = await conn.fetchval("SELECT id FROM producers WHERE credit_code = $1", credit_code)
        await conn.execute(
            "UPDATE producers SET created_at = $2, last_issued_at = $3 WHERE id = $1",
            producer_id, dt.datetime.combine(registered_on, noon), last,
        )  # fmt: skip
        await conn.execute("DELETE FROM producer_issue_days WHERE producer_id = $1", producer_id)
        await conn.executemany(
            "INSERT INTO producer_issue_days (producer_id, issued_on) VALUES ($1, $2)",
            [(producer_id, day) for day in issued_on],
        )
        await conn.execute(
            "UPDATE products SET created_at = $2 WHERE producer_id = $1", producer_id,
            dt.datetime.combine(registered_on, noon),
        )  # fmt: skip
        if last is not None:
            await conn.execute("UPDATE batches SET created_at = $2 WHERE producer_id = $1", producer_id, last)


async def test_coverage_counts_products_and_needs_both_ratios(own_service: Service) -> None:
    traced = await _producers(own_service, MENYUAN, traced=4, untraced=0)
    untraced = await register_producer(own_service, region=MENYUAN)
    for name in ("门源油菜籽", "门源青稞"):
        response = await own_service.client.post(
            f"/api/v1/producers/{untraced}/products",
            json={"name": name, "category": "oilseed"},
            headers=own_service.admin_headers,
        )
        assert response.status_code == 201, response.text
    await register_batch(own_service, traced[0], product={"name": "门源蜂蜜", "category": "honey", "gtin": None})

    coverage = await _coverage(own_service, MENYUAN)

    assert (coverage["registered"], coverage["traced"], coverage["ratio"]) == (5, 4, pytest.approx(0.8))
    assert (coverage["products_registered"], coverage["products_traced"]) == (7, 5)
    assert coverage["product_ratio"] == pytest.approx(5 / 7)
    assert coverage["meets_line"] is False  # producers at 80 %, products below it
    assert coverage["at"] is None


async def test_coverage_at_a_past_day_counts_what_stood_then(own_service: Service) -> None:
    early, late, newcomer = await _producers(own_service, QILIAN, traced=3, untraced=0)
    await history(own_service, early, registered_on=dt.date(2024, 1, 10), issued_on=(dt.date(2024, 2, 1),))
    await history(own_service, late, registered_on=dt.date(2024, 1, 10), issued_on=(dt.date(2024, 12, 1),))
    await history(own_service, newcomer, registered_on=dt.date(2025, 1, 10), issued_on=(dt.date(2025, 2, 1),))

    mid_2024 = await _coverage(own_service, QILIAN, at="2024-06-30")
    spring_2025 = await _coverage(own_service, QILIAN, at="2025-03-01", breakdown="1")
    now = await _coverage(own_service, QILIAN)

    assert (mid_2024["registered"], mid_2024["traced"]) == (2, 1)  # the newcomer was not registered yet
    assert (mid_2024["products_registered"], mid_2024["products_traced"]) == (2, 1)
    assert mid_2024["at"] == "2024-06-30" and mid_2024["as_of"].startswith("2024-07-01T00:00:00")
    assert (spring_2025["registered"], spring_2025["traced"]) == (3, 2)  # early lapsed on 2025-02-01
    assert (spring_2025["products_registered"], spring_2025["products_traced"]) == (3, 2)
    assert spring_2025["counties"][0]["traced"] == 2
    assert (now["registered"], now["traced"], now["products_traced"]) == (3, 0, 0)  # all lapsed since
    assert (await _coverage(own_service, QILIAN, at="2024-01-09"))["registered"] == 0


async def test_coverage_at_today_agrees_with_now(own_service: Service) -> None:
    await _producers(own_service, HAIYAN, traced=3, untraced=1)
    today = china_today().isoformat()

    dated, now = await _coverage(own_service, HAIYAN, at=today), await _coverage(own_service, HAIYAN)

    keys = ("registered", "traced", "products_registered", "products_traced", "meets_line")
    assert [dated[k] for k in keys] == [now[k] for k in keys] == [4, 3, 3, 3, False]


async def test_a_batch_registered_today_is_in_the_history(own_service: Service) -> None:
    (producer,) = await _producers(own_service, HAIYAN, traced=1, untraced=0)

    async with app_worker(own_service.app).pool.acquire() as conn:
        days = await conn.fetch(
            "SELECT i.issued_on FROM producer_issue_days i JOIN producers p ON p.id = i.producer_id"
            " WHERE p.credit_code = $1",
            producer,
        )

    assert [row["issued_on"] for row in days] == [china_today()]


async def test_tags_have_their_own_full_line(own_service: Service) -> None:
    leading = await register_producer(own_service, region=MENYUAN, kind="enterprise")
    await register_batch(own_service, leading)
    farm = await register_producer(own_service, region=MENYUAN, kind="family_farm")  # a tag counts any kind
    for code, tags in ((leading, ["leading_enterprise"]), (farm, ["state_farm", "leading_enterprise"])):
        response = await own_service.client.patch(
            f"/api/v1/producers/{code}", json={"tags": tags}, headers=own_service.admin_headers
        )
        assert response.status_code == 200 and response.json()["tags"] == tags

    coverage = await _coverage(own_service, HAIBEI, breakdown="1")

    tags = coverage["tags"]
    assert (tags["leading_enterprise"]["registered"], tags["leading_enterprise"]["traced"]) == (2, 1)
    assert tags["leading_enterprise"]["line"] == 1.0 and tags["leading_enterprise"]["meets_line"] is False
    assert tags["state_farm"] | {"label": None} == {
        "label": None, "registered": 1, "traced": 0, "ratio": 0.0, "products_registered": 0,
        "products_traced": 0, "product_ratio": None, "meets_line": False, "line": 1.0,
    }  # fmt: skip
    assert (coverage["registered"], coverage["traced"]) == (1, 1)  # the family farm is not among the counted kinds
    menyuan = next(c for c in coverage["counties"] if c["region_code"] == MENYUAN)
    assert menyuan["tags"]["state_farm"]["registered"] == 1
    qilian = next(c for c in coverage["counties"] if c["region_code"] == QILIAN)
    assert qilian["tags"]["state_farm"]["meets_line"] is True  # none tagged: none left untraced

    await register_batch(own_service, farm)
    assert (await _coverage(own_service, HAIBEI))["tags"]["state_farm"]["meets_line"] is True


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        pytest.param(["dragon_head"], "tags.0", id="unknown"),
        pytest.param(["state_farm", "state_farm"], "tags", id="twice"),
        pytest.param("state_farm", "tags", id="not-a-list"),
    ],
)
async def test_bad_tags_are_422(own_service: Service, tags: Any, field: str) -> None:
    body = {"credit_code": random_credit_code(MENYUAN), "name": "门源牧场", "kind": "enterprise",
            "region_code": MENYUAN, "tags": tags}  # fmt: skip

    response = await own_service.client.post("/api/v1/producers", json=body, headers=own_service.admin_headers)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_tags_are_set_at_registration_and_kept_by_the_regulator(own_service: Service) -> None:
    code = random_credit_code(MENYUAN)
    body = {"credit_code": code, "name": "门源国营牧场", "kind": "enterprise", "region_code": MENYUAN,
            "tags": ["state_farm"]}  # fmt: skip
    created = await own_service.client.post("/api/v1/producers", json=body, headers=own_service.admin_headers)
    producer = await _token(own_service, "producer", code)

    own = await own_service.client.patch(f"/api/v1/producers/{code}", json={"tags": []}, headers=producer)

    assert created.status_code == 201 and created.json()["tags"] == ["state_farm"]
    assert own.status_code == 403
    assert (await _coverage(own_service, MENYUAN))["tags"]["state_farm"]["registered"] == 1


@pytest.mark.parametrize(
    "at",
    [
        pytest.param("2024-13-01", id="no-such-day"),
        pytest.param("20240101", id="compact"),
        pytest.param((dt.date.today() + dt.timedelta(days=3)).isoformat(), id="future"),
        pytest.param("1999-12-31", id="too-early"),
    ],
)
async def test_bad_at_is_422(own_service: Service, at: str) -> None:
    response = await own_service.client.get(f"/api/v1/regions/{MENYUAN}/coverage", params={"at": at})

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input" and response.json()["field"] == "at"


# --- unlisted certifications ---------------------------------------------------------------------

YAK = {"name": "门源牦牛肉", "category": "yak"}


async def test_unlisted_lists_certified_products_without_a_traced_batch(own_service: Service) -> None:
    listed = await register_producer(own_service, region=MENYUAN)
    await register_batch(own_service, listed, product={**YAK, "gtin": None})
    await _certify(own_service, listed, YAK)
    other_product = await register_producer(own_service, region=MENYUAN)
    await register_batch(
        own_service, other_product, product={"name": "门源油菜籽", "category": "oilseed", "gtin": None}
    )
    never = await _certify(own_service, other_product, YAK, kind="organic")
    producer_wide = await register_producer(own_service, region=QILIAN)
    never_producer = await _certify(own_service, producer_wide, None, kind="gi")
    lapsed_producer = await register_producer(own_service, region=QILIAN)
    await register_batch(own_service, lapsed_producer, product={**YAK, "gtin": None})
    await _age(own_service, lapsed_producer)
    lapsed = await _certify(own_service, lapsed_producer, YAK)
    expired_producer = await register_producer(own_service, region=MENYUAN)
    await _certify(own_service, expired_producer, YAK, valid_from="2018-01-01", valid_to="2021-01-01")
    outside = await register_producer(own_service, region="630121")
    await _certify(own_service, outside, YAK)
    regulator = await _token(own_service, "regulator", HAIBEI)

    response = await own_service.client.get(f"/api/v1/certifications/unlisted?region={HAIBEI}", headers=regulator)

    assert response.status_code == 200, response.text
    items = {item["id"]: item for item in response.json()["items"]}
    assert set(items) == {never, never_producer, lapsed}
    assert items[never]["reason"] == "never_issued" and items[never]["product"]["name"] == "门源牦牛肉"
    assert items[never]["producer"]["credit_code"] == other_product
    assert items[never_producer]["product"] is None and items[never_producer]["kind_label"] == "农产品地理标志"
    assert items[lapsed]["reason"] == "lapsed" and items[lapsed]["last_issued_at"] is not None
    county = (
        await own_service.client.get(f"/api/v1/certifications/unlisted?region={QILIAN}", headers=regulator)
    ).json()
    assert {item["id"] for item in county["items"]} == {never_producer, lapsed}


async def test_unlisted_pages_through_with_after(own_service: Service) -> None:
    producer = await register_producer(own_service, region=HAIYAN)
    ids = [await _certify(own_service, producer, None, kind="gi") for _ in range(3)]

    first = (
        await own_service.client.get(
            f"/api/v1/certifications/unlisted?region={HAIYAN}&limit=2", headers=own_service.admin_headers
        )
    ).json()
    rest = (
        await own_service.client.get(
            f"/api/v1/certifications/unlisted?region={HAIYAN}&limit=2&after={first['next_after']}",
            headers=own_service.admin_headers,
        )
    ).json()

    assert [i["id"] for i in first["items"] + rest["items"]] == ids
    assert rest["next_after"] is None


@pytest.mark.parametrize(
    ("scope", "region", "status"),
    [
        pytest.param(None, HAIBEI, 401, id="no-token"),
        pytest.param(("regulator", "630100"), HAIBEI, 403, id="other-prefecture"),
        pytest.param(("regulator", MENYUAN), HAIBEI, 403, id="county-asks-prefecture"),
        pytest.param(("producer", None), HAIBEI, 403, id="producer"),
        pytest.param(("regulator", QINGHAI), HAIBEI, 200, id="province"),
        pytest.param(("regulator", HAIBEI), "6322", 422, id="malformed-region"),
    ],
)
async def test_unlisted_is_for_the_regions_regulator(
    own_service: Service, scope: tuple[str, str | None] | None, region: str, status: int
) -> None:
    headers: dict[str, str] = {}
    if scope is not None:
        role, scope_value = scope
        headers = await _token(own_service, role, scope_value or random_credit_code())

    response = await own_service.client.get(f"/api/v1/certifications/unlisted?region={region}", headers=headers)

    assert response.status_code == status, response.text


# --- eligibility ---------------------------------------------------------------------------------


async def test_only_valid_certifications_count_in_the_hooks(own_service: Service) -> None:
    never = await register_producer(own_service, region=MENYUAN)
    counted = await _certify(own_service, never, YAK)
    suspended = await _certify(own_service, never, YAK, kind="organic")
    revoked = await _certify(own_service, never, None, kind="gi")
    for certification_id, status in ((suspended, "suspended"), (revoked, "revoked")):
        changed = await own_service.client.patch(
            f"/api/v1/certifications/{certification_id}", json={"status": status}, headers=own_service.admin_headers
        )
        assert changed.status_code == 200, changed.text

    unlisted = await own_service.client.get(
        f"/api/v1/certifications/unlisted?region={MENYUAN}", headers=own_service.admin_headers
    )
    counts = await hooks.unlisted_counts(app_worker(own_service.app).pool, MENYUAN)
    eligibility = await own_service.client.get(f"/api/v1/eligibility/{never}")

    assert [item["id"] for item in unlisted.json()["items"]] == [counted]
    assert counts == {MENYUAN: 1}
    assert [c["kind"] for c in eligibility.json()["certifications"]] == ["green"]


async def test_eligibility_of_a_traced_producer(own_service: Service) -> None:
    (credit_code,) = await _producers(own_service, MENYUAN, traced=1, untraced=0)
    await _certify(own_service, credit_code, {"name": "大通牦牛肉", "category": "yak"})

    response = await own_service.client.get(f"/api/v1/eligibility/{credit_code.lower()}")  # no token

    assert response.status_code == 200
    body = response.json()
    assert body["registered"] is True and body["traced"] is True and body["reasons"] == []
    assert body["eligible"] == {"brand": True, "fair": True}
    assert body["producer"]["region_code"] == MENYUAN
    assert [(p["name"], p["traced"]) for p in body["products"]] == [("大通牦牛肉", True)]
    assert body["certifications"][0]["product_name"] == "大通牦牛肉"


async def test_eligibility_says_why_not(own_service: Service) -> None:
    registered = await register_producer(own_service, region=MENYUAN)
    unknown = random_credit_code(MENYUAN)

    never = (await own_service.client.get(f"/api/v1/eligibility/{registered}")).json()
    stranger = (await own_service.client.get(f"/api/v1/eligibility/{unknown}")).json()
    malformed = await own_service.client.get("/api/v1/eligibility/91630121MA7XXXXXXX")

    assert (never["traced"], [r["code"] for r in never["reasons"]]) == (False, ["never_issued"])
    assert all(r["message"] for r in never["reasons"])
    assert (stranger["registered"], [r["code"] for r in stranger["reasons"]]) == (False, ["not_registered"])
    assert "producer" not in stranger
    assert malformed.status_code == 422 and malformed.json()["code"] == "invalid_input"
