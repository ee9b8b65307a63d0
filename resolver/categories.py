"""The fixed list of product categories: API name, Chinese name, 8-digit product class of the long form.

The priority products of the policy come first. The 8-digit class is tracecode's own table,
laid out like the national platform's (2-digit sector, 2-digit group, 4-digit item); align it
with the platform's published table when docking.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    label: str
    product_class: str


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("cattle", "牛", "03010100"),
        Category("yak", "牦牛", "03010200"),
        Category("sheep", "羊", "03020100"),
        Category("tibetan_sheep", "藏羊", "03020200"),
        Category("vegetables", "蔬菜", "01030000"),
        Category("fruit", "水果", "01040000"),
        Category("cold_water_fish", "冷水鱼", "04010100"),
        Category("goji", "枸杞", "01050100"),
        Category("highland_barley", "青稞", "01010300"),
        Category("grain", "粮食", "01010000"),
        Category("potato", "马铃薯", "01020100"),
        Category("oilseed", "油料", "01060000"),
        Category("mushroom", "食用菌", "01070000"),
        Category("herb", "中药材", "01080000"),
        Category("tea", "茶叶", "01090000"),
        Category("pork", "猪肉", "03030000"),
        Category("poultry", "禽肉", "03040000"),
        Category("eggs", "禽蛋", "03050000"),
        Category("dairy", "乳品", "03060000"),
        Category("honey", "蜂蜜", "03070000"),
        Category("other", "其他", "09000000"),
    )
}

# Subject category digit of the national long form, by producer kind.
SUBJECT_CATEGORY = {"enterprise": "1", "cooperative": "2", "family_farm": "3", "individual": "4"}

PRODUCER_KIND_LABELS = {
    "enterprise": "企业",
    "cooperative": "农民专业合作社",
    "family_farm": "家庭农场",
    "individual": "个体",
}
# Producers that must be traced 100 % (the policy's 国家及省级农业产业化龙头企业、国营牧场), whatever their kind.
PRODUCER_TAG_LABELS = {"leading_enterprise": "农业产业化龙头企业", "state_farm": "国营牧场"}
CERTIFICATION_LABELS = {"green": "绿色食品", "organic": "有机农产品", "gi": "农产品地理标志"}
CERTIFICATION_STATUS_LABELS = {"valid": "有效", "suspended": "暂停", "revoked": "撤销", "expired": "过期"}
