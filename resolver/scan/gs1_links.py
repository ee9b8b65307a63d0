"""The links of a GS1 Digital Link entity at each level (product, batch, package) and their RFC 9264 linkset.

Every link type is one the GS1 Web Vocabulary defines (https://gs1.org/voc/): the default link and, for it, the
product information page (`gs1:pip`), the traceability data (`gs1:traceability`), the certifications
(`gs1:certificationInfo`, only where there is one) and the recall status (`gs1:recallStatus`). Nothing here needs
a type of our own; one would go under a namespace of ours, declared in the resolver description. Titles are in
Chinese, as every target is (`hreflang` zh).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from resolver.categories import CERTIFICATION_LABELS
from resolver.edge.negotiate import HTML_MEDIA_TYPE, JSON_MEDIA_TYPE

GS1_VOCABULARY: Final = "https://gs1.org/voc/"
# Spellings of the GS1 vocabulary a client may put in `linkType`; `gs1:` is the compact form.
VOCABULARY_SPELLINGS: Final = (
    "gs1:", GS1_VOCABULARY, "http://gs1.org/voc/", "https://ref.gs1.org/voc/", "https://www.gs1.org/voc/",
)  # fmt: skip
DEFAULT_LINK: Final = GS1_VOCABULARY + "defaultLink"
PIP: Final = GS1_VOCABULARY + "pip"
TRACEABILITY: Final = GS1_VOCABULARY + "traceability"
CERTIFICATION_INFO: Final = GS1_VOCABULARY + "certificationInfo"
RECALL_STATUS: Final = GS1_VOCABULARY + "recallStatus"
LINK_TYPES: Final = frozenset({DEFAULT_LINK, PIP, TRACEABILITY, CERTIFICATION_INFO, RECALL_STATUS})

LINKSET_MEDIA_TYPE: Final = "application/linkset+json"
JSON_LD_CONTEXT: Final = "https://ref.gs1.org/standards/resolver/linkset-context"
JSON_LD_CONTEXT_REL: Final = "http://www.w3.org/ns/json-ld#context"
LANGUAGE: Final = "zh"  # every target is in Chinese, so Accept-Language has nothing to choose between

CERTIFICATIONS_SECTION: Final = "#certifications"  # the 认证与登记 section of the consumer and product pages
CERTIFICATE_SECTION: Final = "#certificate"  # the consumer page's 检测与合格证 section
BATCHES_SECTION: Final = "#batches"  # the product page's batches, recalled ones first

TITLE_PAGE: Final = "产品追溯信息"
TITLE_PRODUCT: Final = "产品信息"
TITLE_DOCUMENT: Final = "追溯数据（JSON）"
TITLE_CERTIFICATIONS: Final = "认证信息"
TITLE_CERTIFICATIONS_JSON: Final = "认证信息（JSON）"
TITLE_RECALL_JSON: Final = "召回状态（JSON）"
CERTIFICATE_OF_CONFORMITY: Final = "承诺达标合格证"
RECALL_TITLES: Final = {
    "active": "召回状态：未召回",
    "expired": "召回状态：未召回（已过保质期）",
    "recalled": "召回状态：已召回",
}


@dataclass(frozen=True, slots=True)
class Link:
    """One link: its relation type (a GS1 vocabulary URI), target, title and target media type."""

    rel: str
    href: str
    title: str
    media_type: str | None = None  # None for the default link, which carries a title only (resolver standard 2.5.8)

    def as_target(self) -> dict[str, object]:
        """The RFC 9264 target object, with only the attributes GS1's linkset schema allows."""
        target: dict[str, object] = {"href": self.href, "title": self.title}
        if self.media_type is not None:
            target["type"] = self.media_type
            target["hreflang"] = [LANGUAGE]
        return target


@dataclass(frozen=True, slots=True)
class Context:
    """The links of one level of a Digital Link (its anchor, the canonical URI of that level)."""

    anchor: str
    item_description: str
    links: Sequence[Link]

    def of_type(self, rel: str) -> list[Link]:
        return [link for link in self.links if link.rel == rel]


def compact(rel: str) -> str:
    return "gs1:" + rel.removeprefix(GS1_VOCABULARY)


def expand(link_type: str) -> str:
    """A `linkType` value as a full vocabulary URI when it names the GS1 vocabulary, else as given."""
    for spelling in VOCABULARY_SPELLINGS:
        if link_type.startswith(spelling):
            return GS1_VOCABULARY + link_type.removeprefix(spelling)
    return link_type


def code_links(public_url: str, code: str, document: Mapping[str, Any], *, today: dt.date) -> list[Link]:
    """The links of a batch or package code whose (batch's) JSON document is `document`: HTML first of each type."""
    page = f"{public_url}/t/{code}"
    data = f"{public_url}/api/v1/codes/{code}"
    links = [
        Link(DEFAULT_LINK, page, TITLE_PAGE),
        Link(PIP, page, TITLE_PAGE, HTML_MEDIA_TYPE),
        Link(TRACEABILITY, data, TITLE_DOCUMENT, JSON_MEDIA_TYPE),
    ]
    names = certification_names(document["certifications"], today=today)
    section = CERTIFICATIONS_SECTION if names else CERTIFICATE_SECTION  # where the page shows the first of them
    if document.get("certificate"):
        names.append(CERTIFICATE_OF_CONFORMITY)
    if names:
        title = f"{TITLE_CERTIFICATIONS}：{'、'.join(names)}"
        links += [
            Link(CERTIFICATION_INFO, page + section, title, HTML_MEDIA_TYPE),
            Link(CERTIFICATION_INFO, data, TITLE_CERTIFICATIONS_JSON, JSON_MEDIA_TYPE),
        ]
    links += [
        Link(RECALL_STATUS, page, RECALL_TITLES[document["status"]], HTML_MEDIA_TYPE),
        Link(RECALL_STATUS, data, TITLE_RECALL_JSON, JSON_MEDIA_TYPE),
    ]
    return links


def product_links(
    public_url: str, gtin: str, *, certifications: Sequence[Mapping[str, Any]], recalled: int, today: dt.date
) -> list[Link]:
    """The links of a product (a GTIN): its page, its certifications if it holds a valid one, its recalls."""
    page = f"{public_url}/p/{gtin}"
    links = [Link(DEFAULT_LINK, page, TITLE_PRODUCT), Link(PIP, page, TITLE_PRODUCT, HTML_MEDIA_TYPE)]
    names = certification_names(certifications, today=today)
    if names:
        title = f"{TITLE_CERTIFICATIONS}：{'、'.join(names)}"
        links.append(Link(CERTIFICATION_INFO, page + CERTIFICATIONS_SECTION, title, HTML_MEDIA_TYPE))
    recall_title = f"召回状态：{recalled}个批次已召回" if recalled else "召回状态：无召回批次"
    links.append(Link(RECALL_STATUS, page + BATCHES_SECTION, recall_title, HTML_MEDIA_TYPE))
    return links


def certification_names(certifications: Sequence[Mapping[str, Any]], *, today: dt.date) -> list[str]:
    """The names of the kinds of certification valid on `today`, each once, in a stable order."""
    kinds = {c["kind"] for c in certifications if str(c["valid_until"]) >= today.isoformat()}
    return [CERTIFICATION_LABELS.get(kind, kind) for kind in sorted(kinds)]


def linkset(contexts: Sequence[Context]) -> dict[str, object]:
    """The RFC 9264 JSON linkset of `contexts`, as GS1's linkset schema wants it."""
    objects: list[dict[str, object]] = []
    for context in contexts:
        relations: dict[str, list[dict[str, object]]] = {}
        for link in context.links:
            relations.setdefault(link.rel, []).append(link.as_target())
        objects.append({"anchor": context.anchor, "itemDescription": context.item_description, **relations})
    return {"linkset": objects}


def header_value(href: str, rel: str, *, media_type: str | None = None, title: str | None = None) -> str:
    """An RFC 8288 link-value; a title in `title*` (RFC 8187), since headers are Latin-1."""
    value = f'<{href}>; rel="{rel}"'
    if media_type is not None:
        value += f'; type="{media_type}"'
    if title is not None:
        value += f"; title*=UTF-8''{quote(title, safe='')}"
    return value
