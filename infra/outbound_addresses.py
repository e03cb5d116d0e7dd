"""Where outbound calls (webhooks) may go: public addresses only, checked after resolving the name, and
the connection made to the address that was checked.

A webhook URL names a host; what matters is the address it resolves to when the call is made. A name
that resolves to loopback, a private range, link-local (where cloud metadata services answer), shared
(carrier-grade NAT), multicast or reserved space is refused, and so is an IPv6 address that embeds
such an IPv4 one (mapped, NAT64, 6to4). A name is refused when any of its addresses is: a name that
answers with one public and one internal address is how DNS rebinding starts. `pin` then rewrites the
request to the checked address (Host header and TLS server name keep the original name), so a second
resolution by the HTTP client cannot land somewhere else.

Networks an operator lists (`webhook_allowed_networks`, e.g. loopback for the local demo and the
tests) are allowed besides. Nothing here connects: the classifier is pure, the resolver is passed in
or the event loop's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, not covered by is_private
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(ValueError):
    """The host is not a public address (or does not resolve); the message says which kind, never the URL."""


class HostUnresolvable(AddressRefused):
    """The host did not resolve: refused at registration, retried at delivery (DNS may be back)."""


def non_public_reason(ip: IPAddress) -> str | None:
    """Why this address is not a public one a webhook may reach, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = non_public_reason(embedded)
            return f"{inner} (inside an IPv6 address)" if inner else None
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (where cloud metadata services answer)"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "shared address space (carrier-grade NAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    return next((reason for refused, reason in checks if refused), None)


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus the networks an operator allowed on purpose."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def refusal(self, ip: IPAddress) -> str | None:
        """None when a webhook may connect to `ip`, otherwise the kind of address it is."""
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return None
        return non_public_reason(ip)


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host resolves to, as the operating system's resolver answers."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _port(scheme: str, port: int | None) -> int:
    return port or (443 if scheme == "https" else 80)


async def checked_addresses(url: str, policy: AddressPolicy, resolve: Resolver = system_resolver) -> list[IPAddress]:
    """The addresses the URL's host resolves to, every one allowed by the policy; AddressRefused when
    the host does not resolve or any address is refused."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise AddressRefused("the webhook URL has no host")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            resolved = await resolve(host, _port(parts.scheme, parts.port))
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise HostUnresolvable(f"the webhook host does not resolve ({type(exc).__name__})") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
    if not addresses:
        raise HostUnresolvable("the webhook host does not resolve to any address")
    for ip in addresses:
        reason = policy.refusal(ip)
        if reason:
            raise AddressRefused(f"the webhook host resolves to a non-public address ({reason});"
                                 " webhooks go to public addresses only")
    return addresses


@dataclass(frozen=True)
class PinnedRequest:
    """A request rewritten to go to one checked address while naming the original host."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


def pin(url: str, ip: IPAddress) -> PinnedRequest:
    """`url` with its host replaced by `ip`; the Host header and (for https) the TLS server name, which
    the certificate is verified against, stay the original host's."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header = f"{host_header}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" and not _is_ip(host) else {}
    return PinnedRequest(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
                         {"Host": host_header}, extensions)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
