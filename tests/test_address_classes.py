"""The webhook guard's address classifier (infra.outbound_addresses.non_public_reason) on every kind of
non-public address and a few public ones. A pure function of an `ipaddress` value: the addresses below
are data, never destinations; this module opens no socket, resolves no name and builds no request."""

from __future__ import annotations

import ipaddress
import re

import pytest

from infra.outbound_addresses import non_public_reason


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("172.31.255.255", "private"), ("192.168.0.10", "private"),
    ("169.254.169.254", "link-local"), ("169.254.170.2", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "shared address space"), ("100.127.255.254", "shared address space"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "private|reserved"), ("255.255.255.255", "private|reserved"),
    ("192.0.2.7", "private"), ("198.51.100.1", "private"), ("203.0.113.9", "private"), ("198.18.0.1", "private"),
    ("fc00::1", "private"), ("fd00:ec2::254", "private"), ("2001:db8::1", "private"),
    # IPv6 forms that carry an IPv4 address inside.
    ("::ffff:127.0.0.1", "loopback .inside"), ("::ffff:169.254.169.254", "link-local.*inside"),
    ("::ffff:10.1.1.1", "private .inside"), ("64:ff9b::a9fe:a9fe", "link-local.*inside"),
    ("2002:7f00:1::", "loopback .inside"), ("2002:a9fe:a9fe::", "link-local.*inside"),
    ("::7f00:1", "reserved"),
])
def test_non_public_addresses_are_named_for_what_they_are(address, kind):
    reason = non_public_reason(ipaddress.ip_address(address))
    assert reason is not None
    assert re.search(kind, reason), (address, reason)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                     "::ffff:93.184.216.34", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert non_public_reason(ipaddress.ip_address(address)) is None
