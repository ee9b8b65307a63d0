"""Demo data: Qinghai as it is. Real county codes; fictional producers raising yak and Tibetan sheep,
growing goji in Haixi, farming cold-water trout on the Yellow River reservoirs and growing vegetables.

Loading is idempotent: producers are keyed by credit code and batches by lot, so a second run
adds nothing and prints the same URLs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from codegen.creditcode import make_credit_code
from resolver import queries
from resolver.api.issuer import CodeIssuer
from resolver.api.registry import add_batch
from resolver.edge.bodies import BatchIn
from resolver.scan.documents import china_today


@dataclass(frozen=True, slots=True)
class DemoProducer:
    key: str  # 17 characters: the credit code without its check character
    name: str
    kind: str
    region: str
    contact: str
    certifications: tuple[tuple[str, str], ...] = ()  # (kind, number) for the producer's main product


PRODUCERS = (
    DemoProducer("93630121MA7H8Q2K1", "大通县高原牦牛养殖专业合作社", "cooperative", "630121", "0971-2721001"),
    DemoProducer("93632222MA7J3R5L2", "祁连县阿柔牦牛生态牧业合作社", "cooperative", "632222", "0970-8671002",
                 (("organic", "ORG-QH-2026-0117"),)),
    DemoProducer("93632223MA7K6T8M3", "海晏县金银滩藏羊养殖专业合作社", "cooperative", "632223", "0970-8651003",
                 (("gi", "AGI-QH-00871"),)),
    DemoProducer("91632823MA7L9W1N4", "天峻县高原藏羊牧业有限公司", "enterprise", "632823", "0977-8261004"),
    DemoProducer("93632822MA7M2X4P5", "都兰县柴达木枸杞种植专业合作社", "cooperative", "632822", "0977-8221005",
                 (("organic", "ORG-QH-2025-0452"), ("gi", "AGI-QH-01276"))),
    DemoProducer("91632802MA7N5Y7Q6", "德令哈市红果枸杞产业有限公司", "enterprise", "632802", "0977-8211006",
                 (("green", "LB-18-2405012345"),)),
    DemoProducer("91632521MA7P8A1R7", "共和县龙羊峡冷水鱼养殖有限公司", "enterprise", "632521", "0974-8511007",
                 (("green", "LB-13-2309087654"),)),
    DemoProducer("93632322MA7Q1B4T8", "尖扎县黄河冷水鱼养殖专业合作社", "cooperative", "632322", "0973-8781008"),
    DemoProducer("93630123MA7R4C7U9", "湟源县日月山蔬菜种植专业合作社", "cooperative", "630123", "0971-2431009",
                 (("green", "LB-15-2406034567"),)),
    DemoProducer("92630202MA7T7D0W0", "乐都区高原夏菜家庭农场", "family_farm", "630202", "0972-8621010"),
)  # fmt: skip


def _batches(today: dt.date) -> list[tuple[str, dict[str, Any]]]:
    """(producer key, batch body) of every demo batch, dated relative to `today`."""

    def days_ago(n: int) -> str:
        return (today - dt.timedelta(days=n)).isoformat()

    def inspected(result: str, items: list[Any], n: int, agency: str = "县农产品质量安全检测站") -> dict[str, Any]:
        return {"result": result, "method": "快速检测", "agency": agency, "items": items, "inspected_on": days_ago(n)}

    def certificate(basis: str, n: int) -> dict[str, Any]:
        return {"kind": "承诺达标合格证", "basis": basis, "issued_on": days_ago(n)}

    meat = ["克伦特罗", "莱克多巴胺", "沙丁胺醇"]
    goji = ["二氧化硫", {"name": "吡虫啉", "value": "未检出", "result": "pass"}, "啶虫脒"]
    fish = ["孔雀石绿", "硝基呋喃类代谢物", "氯霉素"]
    veg = ["毒死蜱", "腐霉利", "克百威"]
    return [
        ("93630121MA7H8Q2K1", {"product": {"name": "大通牦牛肉", "category": "yak"}, "lot": "DT-YAK-2611-01",
          "quantity": 1200, "unit": "kg", "produced_on": days_ago(6), "origin": "大通县宝库乡",
          "expires_on": (today + dt.timedelta(days=180)).isoformat(),
          "inspection": inspected("pass", meat, 5), "certificate": certificate("self_test", 4)}),
        ("93632222MA7J3R5L2", {"product": {"name": "祁连有机牦牛肉", "category": "yak", "gtin": "06901234567892"},
          "lot": "QL-YAK-2611-03", "quantity": 800, "unit": "kg", "produced_on": days_ago(9),
          "origin": "祁连县阿柔乡草原", "inspection": inspected("pass", meat, 8, "海北州农畜产品质量安全检测中心"),
          "certificate": certificate("commissioned_test", 7)}),
        ("93632223MA7K6T8M3", {"product": {"name": "海晏藏羊肉", "category": "tibetan_sheep"}, "lot": "HY-TS-2611-02",
          "quantity": 650, "unit": "kg", "produced_on": days_ago(4), "origin": "海晏县金银滩草原",
          "inspection": inspected("pass", meat, 3), "certificate": certificate("self_test", 3)}),
        ("91632823MA7L9W1N4", {"product": {"name": "天峻藏羊肉", "category": "tibetan_sheep"}, "lot": "TJ-TS-2610-11",
          "quantity": 2000, "unit": "kg", "produced_on": days_ago(30), "origin": "天峻县江河镇",
          "inspection": inspected("pass", meat, 29), "certificate": None}),
        ("93632822MA7M2X4P5", {"product": {"name": "柴达木有机黑枸杞", "category": "goji"}, "lot": "DL-GJ-2609-01",
          "quantity": 3000, "unit": "kg", "produced_on": days_ago(70), "origin": "都兰县宗加镇枸杞基地",
          "inspection": inspected("pass", goji, 60, "海西州农产品质量安全检测中心"),
          "certificate": certificate("commissioned_test", 58)}),
        ("91632802MA7N5Y7Q6", {"product": {"name": "德令哈红枸杞", "category": "goji"}, "lot": "DLH-GJ-2608-07",
          "quantity": 5000, "unit": "kg", "produced_on": days_ago(90), "origin": "德令哈市尕海镇",
          "inspection": inspected("pass", goji, 85), "certificate": certificate("quality_control", 84)}),
        ("91632521MA7P8A1R7", {"product": {"name": "龙羊峡虹鳟鱼", "category": "cold_water_fish"},
          "lot": "LYX-RT-2611-21", "quantity": 900, "unit": "kg", "produced_on": days_ago(2),
          "origin": "共和县龙羊峡库区网箱", "expires_on": (today + dt.timedelta(days=12)).isoformat(),
          "inspection": inspected("pass", fish, 2), "certificate": certificate("self_test", 1)}),
        ("93632322MA7Q1B4T8", {"product": {"name": "尖扎黄河三文鱼", "category": "cold_water_fish"},
          "lot": "JZ-RT-2610-05", "quantity": 400, "unit": "kg", "produced_on": days_ago(40),
          "origin": "尖扎县李家峡库区", "expires_on": days_ago(10),
          "inspection": inspected("pass", fish, 40), "certificate": certificate("self_test", 39)}),
        ("93630123MA7R4C7U9", {"product": {"name": "湟源高原娃娃菜", "category": "vegetables"},
          "lot": "HY-VEG-2611-14", "quantity": 12000, "unit": "kg", "produced_on": days_ago(1),
          "origin": "湟源县日月乡蔬菜基地", "expires_on": (today + dt.timedelta(days=10)).isoformat(),
          "inspection": inspected("pass", veg, 1), "certificate": certificate("self_test", 1)}),
        ("92630202MA7T7D0W0", {"product": {"name": "乐都紫皮大蒜", "category": "vegetables"},
          "lot": "LD-VEG-2611-02", "quantity": 3500, "unit": "kg", "produced_on": days_ago(3),
          "origin": "乐都区高庙镇",
          "inspection": inspected("fail", ["毒死蜱", {"name": "腐霉利", "value": "0.35 mg/kg", "limit": "0.2 mg/kg",
                                                     "result": "fail"}], 2),
          "certificate": None}),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class DemoBatch:
    product: str
    producer: str
    trace_code: str
    long_code: str


async def load_demo(pool: asyncpg.Pool, issuer: CodeIssuer) -> list[DemoBatch]:
    """Load the demo producers, certifications and batches that are missing; return every demo batch."""
    today = china_today()
    producers: dict[str, asyncpg.Record] = {}
    for p in PRODUCERS:
        credit_code = make_credit_code(p.key)
        await pool.execute(queries.INSERT_PRODUCER, credit_code, p.name, p.kind, p.region, p.contact, [])
        producer = await pool.fetchrow(queries.PRODUCER_BY_CREDIT_CODE, credit_code)
        assert producer is not None, credit_code
        producers[p.key] = producer
    out = []
    for key, raw in _batches(today):
        producer = producers[key]
        existing = await pool.fetchrow(queries.DEMO_BATCH_BY_LOT, producer["id"], raw["lot"])
        if existing is None:
            body = BatchIn.model_validate({"producer_credit_code": producer["credit_code"], **raw})
            issued = await add_batch(pool, issuer, producer, body)
            trace_code, long_code = issued.trace_code, issued.long_code
        else:
            trace_code, long_code = existing["trace_code"], existing["long_code"]
        out.append(DemoBatch(raw["product"]["name"], producer["name"], trace_code, long_code))
    for p in PRODUCERS:
        for kind, number in p.certifications:
            await pool.execute(
                queries.DEMO_CERTIFICATION, kind, number, producers[p.key]["id"], today - dt.timedelta(days=200),
                today + dt.timedelta(days=900),
            )  # fmt: skip
    return out
