from __future__ import annotations

import re

from codegen.format import compose
from tests.conftest import Service
from tests.helpers import register_batch


def _value(text: str, pattern: str) -> float:
    match = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    assert match is not None, pattern
    return float(match.group(1))


async def test_metrics_count_requests_by_route_template_and_cache_tiers(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    for _ in range(3):
        await service.client.get(f"/api/v1/codes/{code}")
    await service.client.get(f"/api/v1/codes/{compose(1, '630121', 12345)}")

    text = (await service.client.get("/metrics")).text

    route = r'route="/api/v1/codes/\{code:path\}"'
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{route},status="200"\}}') == 3
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{route},status="404"\}}') == 1
    assert _value(text, rf"tracecode_request_duration_seconds_count\{{{route}\}}") == 4
    assert _value(text, r'tracecode_cache_total\{tier="local_hits"\}') == 2
    assert _value(text, r'tracecode_cache_total\{tier="postgres_loads"\}') == 2
    assert _value(text, r'tracecode_store_errors_total\{store="postgres"\}') == 0
    assert code not in text  # codes never become labels


async def test_metrics_count_pages_refusals_and_other_methods_under_their_route(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    await service.client.get(f"/t/{code}", headers={"Accept": "text/html"})
    await service.client.get(f"/t/{code[:-1]}x", headers={"Accept": "text/html"})
    await service.client.head(f"/api/v1/codes/{code}")
    await service.client.options(f"/api/v1/codes/{code}")

    text = (await service.client.get("/metrics")).text

    page, document = r'route="/t/\{code:path\}"', r'route="/api/v1/codes/\{code:path\}"'
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{page},status="200"\}}') == 1
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{page},status="400"\}}') == 1
    assert _value(text, rf'tracecode_requests_total\{{method="HEAD",{document},status="200"\}}') == 1
    assert _value(text, rf'tracecode_requests_total\{{method="OPTIONS",{document},status="405"\}}') == 1
