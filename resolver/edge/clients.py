"""Who sent a request: the peer address of its connection, and the networks it counts as.

A client (an IPv4 address, an IPv6 /64: one subscriber) is what the limit on bad lookups counts
(resolver.scan.ratelimit); a place (an IPv4 /24, an IPv6 /48) is what a code's scan places count
(resolver.scan.scans: scans from many places in a short time flag a copied code). Both are asked on every
scan, so both are remembered. Behind a proxy the peer is the proxy.
"""

from __future__ import annotations

import functools
import ipaddress

from starlette.types import Scope

IPV6_CLIENT_PREFIX = 64  # one subscriber's IPv6 network
IPV4_PLACE_PREFIX = 24
IPV6_PLACE_PREFIX = 48


def host_of(scope: Scope) -> str:
    """The peer address of the request's connection, "" when the server does not say."""
    client = scope.get("client")
    return str(client[0]) if client else ""


@functools.lru_cache(maxsize=65_536)
def client_of(host: str) -> str:
    """The client a lookup counts against: the IPv4 address, or the IPv6 /64."""
    return _network_of(host, 32, IPV6_CLIENT_PREFIX)


@functools.lru_cache(maxsize=65_536)
def place_of(host: str) -> str:
    """The place a scan comes from: the IPv4 /24, or the IPv6 /48."""
    return _network_of(host, IPV4_PLACE_PREFIX, IPV6_PLACE_PREFIX)


def _network_of(host: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network of `host` at the prefix of its version (the bare address at a full prefix); a host that is
    not an address stands for itself."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix == address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
