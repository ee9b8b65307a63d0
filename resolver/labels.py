"""Package labels (产品追溯码, type 4): issued in bulk for a batch, answered as CSV or JSON, printed as a PDF sheet."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
