"""Fetch a provider's result URL without letting it reach our own network (SSRF).

A result URL is fetched only when

* its scheme is http or https and its host is on the allow-list of that provider
  (exact names, or ``*.example.com`` for sub-domains);
* every address the host resolves to is public — never loopback, private (RFC 1918, ULA),
  link-local (169.254/16, fe80::/10, so cloud metadata such as 169.254.169.254 and
  fd00:ec2::254), CGNAT (100.64/10), multicast, reserved or unspecified — unless the host is
  one the operator trusts (the configured ComfyUI URL, ``DARKROOM_TRUSTED_DOWNLOAD_HOSTS``);
* the connection goes to the address that was checked: the name is resolved once and the
  request is sent to that IP with the original ``Host`` header and TLS SNI / certificate name,
  so a second DNS answer cannot swap in an internal address (no rebinding window);
* every redirect hop is checked again the same way, up to a limit;
* the body is at most ``max_bytes``, the whole fetch ends within ``timeout`` seconds, and the
  bytes are an image (sniffed, JPEG/PNG/WebP).

``data:`` URIs are decoded directly under the same size cap and sniffing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import httpx

from darkroom import imaging
from darkroom.providers.base import ProviderError, ProviderTimeout

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
AddressCheck = Callable[[str], bool]

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class DownloadRefused(ProviderError):
    """The URL, an address it resolves to, a redirect or the body broke the rules."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_address(str(mapped))
        if ip.teredo is not None:
            return False
    if ip in _METADATA or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT):
        return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_reserved
        or ip.is_unspecified
    )


def host_matches(host: str, patterns: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True)
class DownloadPolicy:
    allowed_hosts: Sequence[str]
    trusted_hosts: Sequence[str] = ()  # may resolve to private addresses (operator-configured)
    max_bytes: int = 50 * 1024 * 1024
    timeout: float = 60.0
    max_redirects: int = 3
    schemes: Sequence[str] = field(default=("https", "http"))


class SafeDownloader:
    """``fetch(url)`` → image bytes. ``resolver``, ``address_ok`` and ``verify`` (the TLS trust
    store) are injectable for tests. Over https the TLS server name (SNI) and the certificate
    check use the URL's host name while the TCP connection goes to the checked IP."""

    def __init__(
        self,
        policy: DownloadPolicy,
        resolver: Resolver = system_resolver,
        address_ok: AddressCheck = is_public_address,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.address_ok = address_ok
        self._client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=policy.timeout, verify=verify
        )

    async def fetch(self, url: str) -> bytes:
        if url.startswith("data:"):
            return self.decode_data_uri(url)
        try:
            async with asyncio.timeout(self.policy.timeout):
                data = await self._follow(url)
        except TimeoutError:
            raise ProviderTimeout(
                f"Downloading the result took longer than {self.policy.timeout:g} s."
            ) from None
        return self._image(data)

    def decode_data_uri(self, uri: str) -> bytes:
        header, sep, payload = uri.partition(",")
        if not sep:
            raise DownloadRefused("The provider sent a malformed data: URI.")
        if len(payload) * 3 // 4 > self.policy.max_bytes:
            raise DownloadRefused(f"The result is larger than {self.policy.max_bytes} bytes.")
        try:
            if header.endswith(";base64"):
                data = base64.b64decode(payload, validate=True)
            else:
                data = unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            raise DownloadRefused("The provider sent a data: URI that is not valid base64.") from None
        if len(data) > self.policy.max_bytes:
            raise DownloadRefused(f"The result is larger than {self.policy.max_bytes} bytes.")
        return self._image(data)

    def _image(self, data: bytes) -> bytes:
        if imaging.sniff_image_type(data) is None:
            raise DownloadRefused("The provider's result is not a JPEG, PNG or WebP image.")
        return data

    async def _follow(self, url: str) -> bytes:
        current = httpx.URL(url)
        for _hop in range(self.policy.max_redirects + 1):
            target, host_header, sni = await self._checked(current)
            extensions = {"sni_hostname": sni} if current.scheme == "https" else {}
            headers = {"Host": host_header, "Accept": "image/*"}
            try:
                async with self._client.stream("GET", target, headers=headers, extensions=extensions) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise DownloadRefused("A redirect without a Location header.")
                        current = current.join(location)
                        continue
                    if resp.status_code != 200:
                        raise DownloadRefused(f"Fetching the result answered {resp.status_code}.")
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                        raise DownloadRefused(f"The result is larger than {self.policy.max_bytes} bytes.")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > self.policy.max_bytes:
                            raise DownloadRefused(f"The result is larger than {self.policy.max_bytes} bytes.")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.TimeoutException:
                raise ProviderTimeout("Downloading the result timed out.") from None
            except httpx.TransportError as exc:
                raise ProviderError(f"Downloading the result failed: {exc!r}") from None
        raise DownloadRefused(f"More than {self.policy.max_redirects} redirects.")

    async def _checked(self, url: httpx.URL) -> tuple[httpx.URL, str, str]:
        """Validate one hop; return the URL to connect to (the checked IP), Host header and SNI."""
        if url.scheme not in self.policy.schemes:
            raise DownloadRefused(f"Result URLs must be http(s), not {url.scheme or 'none'}.")
        host = url.host
        if not host:
            raise DownloadRefused("The result URL has no host.")
        if url.userinfo:
            raise DownloadRefused("Result URLs with credentials are refused.")
        if not host_matches(host, self.policy.allowed_hosts):
            raise DownloadRefused(f"The host {host} is not on this provider's download allow-list.")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            ipaddress.ip_address(host)
            addresses: Sequence[str] = [host]
        except ValueError:
            try:
                addresses = await self.resolver(host, port)
            except OSError as exc:
                raise DownloadRefused(f"The host {host} does not resolve: {exc}") from None
        if not addresses:
            raise DownloadRefused(f"The host {host} does not resolve.")
        trusted = host_matches(host, self.policy.trusted_hosts)
        if not trusted:
            bad = [a for a in addresses if not self.address_ok(a)]
            if bad:
                raise DownloadRefused(f"The host {host} resolves to a non-public address ({bad[0]}).")
        host_header = host if url.port is None else f"{host}:{url.port}"
        return url.copy_with(host=addresses[0]), host_header, host

    async def aclose(self) -> None:
        await self._client.aclose()
