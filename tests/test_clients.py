import pytest

from resolver.edge.clients import client_of, host_of, place_of


@pytest.mark.parametrize(
    ("host", "client"),
    [
        pytest.param("203.0.113.7", "203.0.113.7", id="ipv4-address"),
        pytest.param("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", id="ipv6-64"),
        pytest.param("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64", id="ipv6-same-64"),
        pytest.param("", "unknown", id="none"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(host: str, client: str) -> None:
    assert client_of(host) == client


@pytest.mark.parametrize(
    ("host", "place"),
    [
        pytest.param("203.0.113.7", "203.0.113.0/24", id="ipv4-24"),
        pytest.param("2001:db8:1:2:aaaa::1", "2001:db8:1::/48", id="ipv6-48"),
        pytest.param("unix-socket", "unix-socket", id="not-an-address"),
        pytest.param("", "unknown", id="none"),
    ],
)
def test_a_place_is_an_ipv4_24_or_an_ipv6_48(host: str, place: str) -> None:
    assert place_of(host) == place


def test_the_host_is_the_peer_address_or_nothing() -> None:
    assert host_of({"type": "http", "client": ("198.51.100.4", 50123)}) == "198.51.100.4"
    assert host_of({"type": "http", "client": None}) == ""
    assert host_of({"type": "http"}) == ""
