"""Outbound HTTP to other people's servers: where webhooks may go, and the sender (ADR 0025).

A webhook URL is chosen by a client, and Tally's own network position must not be lent out
(server-side request forgery): a URL pointing at ``127.0.0.1``, a metadata service on
``169.254.169.254`` or a database on ``10.0.0.5`` would let an API client probe or poke what only
Tally can reach. So a destination is refused unless

- it is ``http://`` or ``https://``, with a host, and no credentials (``user:password@``);
- every address its host resolves to is public: not private, loopback, link-local, multicast,
  reserved, unspecified or shared (CGNAT), including IPv4 addresses embedded in IPv6 ones
  (``::ffff:a.b.c.d``, 6to4, Teredo, NAT64);

unless ``TALLY_WEBHOOK_ALLOWED_HOSTS`` names the host, or a network that holds the address.

The check runs when a subscription is created, and again before every attempt: DNS answers can
change (DNS rebinding), so the sender resolves the host itself, checks every address, and
connects to a checked address: the URL's host is replaced by the address, while the ``Host``
header and TLS (SNI and certificate verification) keep the name. Each attempt has its own client:
a connection pooled by address could otherwise carry one host's request over a TLS session made
for another. Proxies from the environment are ignored (they would connect elsewhere), and
redirects are not followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from tally.services.webhooks import DeliveryFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
USER_AGENT = "Tally-Webhooks/1"
MAX_URL_LENGTH = 2048
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """The destination may not receive webhooks; the message says why (safe to show the client)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver, in its order of preference."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in found:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone (fe80::1%eth0)
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked destination: the URL, its host's name (``None`` for an address), and where to connect."""

    url: httpx.URL
    name: str | None
    addresses: tuple[IPAddress, ...]


def _embedded(address: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _public(address: IPAddress) -> bool:
    return not (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


class Destinations:
    """The webhook destination policy; implements ``services.webhooks.Destinations``."""

    def __init__(
        self, allowed: Sequence[str] = (), *, timeout: float = 5.0, resolver: Resolver = system_resolver
    ) -> None:
        self._hosts = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed:
            try:
                self._networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self._hosts.add(entry.strip().lower().rstrip("."))
        self._timeout = timeout
        self._resolve = resolver

    async def refusal(self, url: str) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await self.check(url)
        except Refused as refused:
            return str(refused)
        except TimeoutError:
            return "The URL's host did not resolve in time."
        return None

    async def check(self, url: str) -> Destination:
        """The checked destination of ``url``; ``Refused`` with the reason otherwise."""
        target = _parse(url)
        literal = _address(target.host)
        if literal is not None:
            self._require_allowed(literal, None)
            return Destination(target, None, (literal,))
        name = target.raw_host.decode("ascii").lower().rstrip(".")
        if not _HOSTNAME.fullmatch(name):
            raise Refused("The URL's host is not a valid host name.")
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            found = await self._resolve(name, port)
        except OSError:
            found = []
        addresses = tuple(address for address in (_address(a) for a in found) if address is not None)
        if not addresses:
            raise Refused(f"The host {name} does not resolve to any address.")
        for address in addresses:
            self._require_allowed(address, name)
        return Destination(target, name, addresses)

    def _require_allowed(self, address: IPAddress, name: str | None) -> None:
        if name is not None and name in self._hosts:
            return
        if any(inner in network for inner in _embedded(address) for network in self._networks):
            return
        if all(_public(inner) for inner in _embedded(address)):
            return
        where = f"The host {name} resolves to {address}" if name else f"The address {address}"
        raise Refused(
            f"{where}, which is not a public address (private, loopback, link-local, multicast or "
            "reserved); webhooks may target it only if TALLY_WEBHOOK_ALLOWED_HOSTS allows it."
        )


def _parse(url: str) -> httpx.URL:
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise Refused("The URL is not valid.") from None
    if target.scheme not in ("http", "https"):
        raise Refused("The URL must start with https:// or http://.")
    if target.userinfo:
        raise Refused("The URL must not carry credentials (user:password@).")
    if not target.host:
        raise Refused("The URL has no host.")
    return target


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class HttpSender:
    """Sends one attempt; implements ``services.webhooks.Sender``.

    Everything from resolving the host to the response's status line fits in ``timeout``
    seconds. The response body is not read.
    """

    def __init__(self, destinations: Destinations, *, timeout: float) -> None:
        self._destinations = destinations
        self._timeout = timeout
        self._tls: ssl.SSLContext | None = None  # built at the first attempt, then shared
        # httpx logs each request's URL at INFO; a receiver's URL may carry a token in its query.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        try:
            async with asyncio.timeout(self._timeout):
                destination = await self._destinations.check(url)
                return await self._post(destination, body, headers)
        except Refused as refused:
            raise DeliveryFailed(f"refused: {refused}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryFailed(f"no response within {int(self._timeout * 1000)} ms") from None
        except httpx.HTTPError as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}"[:500]) from None

    async def _post(self, destination: Destination, body: bytes, headers: Mapping[str, str]) -> int:
        target = destination.url
        sent = {"content-type": "application/json", "user-agent": USER_AGENT, **headers}
        extensions: dict[str, object] = {}
        if destination.name is not None:
            sent["host"] = target.netloc.decode("ascii")
            if target.scheme == "https":
                extensions["sni_hostname"] = destination.name
        if self._tls is None:  # httpx would build (and load CA files for) one per client otherwise
            self._tls = httpx.create_ssl_context()
        last: httpx.ConnectError | None = None
        for address in destination.addresses:  # in the resolver's order; the next if one refuses
            pinned = target if destination.name is None else target.copy_with(host=str(address))
            async with httpx.AsyncClient(
                verify=self._tls, trust_env=False, follow_redirects=False, timeout=self._timeout
            ) as client:
                try:
                    async with client.stream(
                        "POST", pinned, content=body, headers=sent, extensions=extensions
                    ) as response:
                        return response.status_code
                except httpx.ConnectError as error:
                    last = error
        raise DeliveryFailed(f"could not connect: {last}"[:500])
