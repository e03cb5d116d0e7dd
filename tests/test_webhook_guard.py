"""The webhook address guard (infra.outbound_addresses) where it meets this machine: names its own
resolver answers (localhost, odd spellings of 127.0.0.1), a loopback allow-list, and the pinned request.
Only loopback addresses appear here. The checks on other addresses are pure functions with a stand-in
resolver, in tests/test_address_classes.py.

Nothing here opens a connection, and the autouse `no_connections_leave_this_machine` fixture makes that
a guarantee rather than a promise (any connect to a non-loopback address fails the test before a packet
is sent)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from infra.outbound_addresses import (
    AddressPolicy,
    AddressRefused,
    checked_addresses,
    pin,
)
from infra.settings import Settings

PUBLIC_ONLY = AddressPolicy()
LOOPBACK = AddressPolicy.allowing(["127.0.0.0/8", "::1/128"])


@pytest.fixture(autouse=True)
def no_connections_leave_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket connect in these tests must go to a loopback address (asyncio connects through the
    same methods); anything else fails here, before a packet leaves."""
    def guarded(original: Any) -> Any:
        def connect(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                host = address[0].split("%")[0]
                assert ipaddress.ip_address(host).is_loopback, f"a test tried to connect to {host}"
            return original(sock, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))


async def test_odd_spellings_of_loopback_are_refused():
    # Decimal and short forms are names to the URL parser; this machine's resolver turns them into 127.0.0.1.
    for url in ("http://2130706433/", "http://127.1/", "http://0x7f000001/"):
        with pytest.raises(AddressRefused, match="loopback"):
            await checked_addresses(url, PUBLIC_ONLY)


async def test_localhost_resolves_to_loopback_and_is_refused_unless_allowed():
    with pytest.raises(AddressRefused, match="loopback"):
        await checked_addresses("http://localhost:9/hook", PUBLIC_ONLY)
    allowed = await checked_addresses("http://localhost:9/hook", LOOPBACK)
    assert allowed and all(a.is_loopback for a in allowed)
    assert LOOPBACK.refusal(ipaddress.ip_address("::1")) is None
    assert AddressPolicy.allowing(["127.0.0.0/8"]).refusal(ipaddress.ip_address("::1")) == "loopback"


def test_pinned_requests_go_to_the_checked_address_under_the_original_name():
    # pin() only rewrites a URL; loopback addresses stand in for the checked one.
    pinned = pin("https://hooks.example.com:8443/a/b?c=1", ipaddress.ip_address("127.0.0.1"))
    assert pinned.url == "https://127.0.0.1:8443/a/b?c=1"
    assert pinned.headers == {"Host": "hooks.example.com:8443"}
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}, "TLS verifies the original name"
    v6 = pin("http://hooks.example.com/x", ipaddress.ip_address("::1"))
    assert v6.url == "http://[::1]/x" and v6.headers == {"Host": "hooks.example.com"} and not v6.extensions


def test_settings_default_to_public_addresses_only():
    assert Settings(_env_file=None).webhook_allowed_networks == []
    with pytest.raises(ValueError):
        Settings(_env_file=None, webhook_allowed_networks=["not-a-network"])
