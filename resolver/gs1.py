"""GS1 Digital Link: /01/{gtin}/10/{lot} to a batch's page, its linkset, and the resolver description."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
