"""The SSRF-safe downloader. Names are resolved by a fake resolver; an audit hook checks that no
socket ever connects to anything but loopback."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence

import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from darkroom.providers.base import ProviderError, ProviderTimeout
from darkroom.providers.download import (
    DownloadPolicy,
    DownloadRefused,
    SafeDownloader,
    host_matches,
    is_public_address,
)
from tests.providers.fakes.server import png, serve

IMAGE = png(10, 10)


class FakeResolver:
    """Answers from a table; counts lookups. Never touches the network."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        answers = self.table[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]


def loopback_allowed(address: str) -> bool:
    """The test policy for hosts served by the local fake: public, or loopback (nothing else)."""
    return is_public_address(address) or ipaddress.ip_address(address).is_loopback


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def image(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(IMAGE, media_type="image/png")

    async def redirect(request: Request) -> Response:
        seen.append(dict(request.headers))
        return RedirectResponse(request.query_params["to"], status_code=302)

    async def big(request: Request) -> Response:
        return Response(b"\x89PNG" + b"0" * 300_000, media_type="image/png")

    async def big_stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"0" * 10_000

        return StreamingResponse(chunks(), media_type="image/png")

    async def text(request: Request) -> Response:
        return Response(b"<html>hello</html>", media_type="text/html")

    async def slow(request: Request) -> Response:
        await asyncio.sleep(3)
        return Response(IMAGE, media_type="image/png")

    app = Starlette(
        routes=[
            Route("/img.png", image),
            Route("/go", redirect),
            Route("/big", big),
            Route("/big-stream", big_stream),
            Route("/text", text),
            Route("/slow", slow),
        ]
    )
    async with serve(app) as base:
        yield base.rsplit(":", 1)[1], seen


def _downloader(resolver: FakeResolver, **policy: object) -> SafeDownloader:
    values: dict[str, object] = {
        "allowed_hosts": ["cdn.example.test", "*.replicate.delivery"],
        "timeout": 1.0,
    }
    values.update(policy)
    return SafeDownloader(DownloadPolicy(**values), resolver=resolver)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",  # noqa: S104
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::5",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",
    ],
)
async def test_non_public_addresses_are_refused_before_any_connect(
    loopback_only: list[object], address: str
) -> None:
    resolver = FakeResolver({"x.replicate.delivery": [[address]]})
    downloader = _downloader(resolver)
    with pytest.raises(DownloadRefused, match="non-public address"):
        await downloader.fetch("https://x.replicate.delivery/out.png")
    await downloader.aclose()
    assert loopback_only == [] and resolver.calls == ["x.replicate.delivery"]


async def test_one_bad_address_among_good_ones_is_enough_to_refuse(loopback_only: list[object]) -> None:
    resolver = FakeResolver({"cdn.example.test": [["93.184.216.34", "10.1.2.3"]]})
    with pytest.raises(DownloadRefused):
        await _downloader(resolver).fetch("https://cdn.example.test/a.png")
    assert loopback_only == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://evil.example.com/a.png", "allow-list"),
        ("https://replicate.delivery.evil.com/a.png", "allow-list"),
        ("ftp://cdn.example.test/a.png", "http"),
        ("file:///etc/passwd", "http"),
        ("https://user:pw@cdn.example.test/a.png", "credentials"),
        ("http://169.254.169.254/latest/meta-data", "allow-list"),
    ],
)
async def test_urls_outside_the_rules_are_refused_without_resolving(
    loopback_only: list[object], url: str, message: str
) -> None:
    resolver = FakeResolver({})
    with pytest.raises(DownloadRefused, match=message):
        await _downloader(resolver).fetch(url)
    assert resolver.calls == [] and loopback_only == []


async def test_literal_private_ip_on_the_allow_list_is_still_refused(loopback_only: list[object]) -> None:
    with pytest.raises(DownloadRefused, match="non-public"):
        await _downloader(FakeResolver({}), allowed_hosts=["169.254.169.254"]).fetch(
            "http://169.254.169.254/x"
        )
    assert loopback_only == []


async def test_connects_to_the_checked_address_with_the_original_host(
    origin: tuple[str, list[dict[str, str]]], loopback_only: list[object]
) -> None:
    port, seen = origin
    # A rebinding resolver: the first answer passes the check, a second one would be internal.
    resolver = FakeResolver({"cdn.example.test": [["127.0.0.1"], ["10.0.0.1"]]})
    downloader = SafeDownloader(
        DownloadPolicy(allowed_hosts=["cdn.example.test"], timeout=5),
        resolver=resolver,
        address_ok=loopback_allowed,
    )
    data = await downloader.fetch(f"http://cdn.example.test:{port}/img.png")
    await downloader.aclose()
    assert data == IMAGE
    assert resolver.calls == ["cdn.example.test"]  # resolved once, no second lookup to rebind
    assert seen[-1]["host"] == f"cdn.example.test:{port}"
    assert loopback_only, "the audit hook saw the connect"


async def test_every_redirect_hop_is_checked(origin: tuple[str, list[dict[str, str]]]) -> None:
    port, _ = origin
    resolver = FakeResolver({"cdn.example.test": [["127.0.0.1"]], "internal.example.test": [["10.0.0.9"]]})
    policy = DownloadPolicy(allowed_hosts=["cdn.example.test", "internal.example.test"], timeout=5)
    downloader = SafeDownloader(policy, resolver=resolver, address_ok=loopback_allowed)
    ok = f"http://cdn.example.test:{port}/go?to=/img.png"
    assert await downloader.fetch(ok) == IMAGE
    bad = f"http://cdn.example.test:{port}/go?to=http://internal.example.test/x"
    with pytest.raises(DownloadRefused, match="non-public"):
        await downloader.fetch(bad)
    elsewhere = f"http://cdn.example.test:{port}/go?to=http://evil.example.com/x"
    with pytest.raises(DownloadRefused, match="allow-list"):
        await downloader.fetch(elsewhere)
    loop = f"http://cdn.example.test:{port}/go?to=/go%3Fto%3D/go%253Fto%253D/img.png"
    limited = SafeDownloader(
        DownloadPolicy(allowed_hosts=["cdn.example.test"], max_redirects=1, timeout=5),
        resolver=resolver,
        address_ok=loopback_allowed,
    )
    with pytest.raises(DownloadRefused, match="redirects"):
        await limited.fetch(loop)
    await downloader.aclose()
    await limited.aclose()


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/big", DownloadRefused, "larger"),
        ("/big-stream", DownloadRefused, "larger"),
        ("/text", DownloadRefused, "not a JPEG"),
        ("/slow", ProviderTimeout, "result"),
    ],
)
async def test_size_cap_sniffing_and_timeout(
    origin: tuple[str, list[dict[str, str]]], path: str, error: type[Exception], message: str
) -> None:
    port, _ = origin
    policy = DownloadPolicy(
        allowed_hosts=["127.0.0.1"], trusted_hosts=["127.0.0.1"], max_bytes=200_000, timeout=1
    )
    downloader = SafeDownloader(policy, resolver=FakeResolver({}))
    with pytest.raises(error, match=message):
        await downloader.fetch(f"http://127.0.0.1:{port}{path}")
    await downloader.aclose()


async def test_trusted_hosts_may_be_private(origin: tuple[str, list[dict[str, str]]]) -> None:
    port, _ = origin
    trusted = SafeDownloader(
        DownloadPolicy(allowed_hosts=["127.0.0.1"], trusted_hosts=["127.0.0.1"]), resolver=FakeResolver({})
    )
    assert await trusted.fetch(f"http://127.0.0.1:{port}/img.png") == IMAGE
    untrusted = SafeDownloader(DownloadPolicy(allowed_hosts=["127.0.0.1"]), resolver=FakeResolver({}))
    with pytest.raises(DownloadRefused, match="non-public"):
        await untrusted.fetch(f"http://127.0.0.1:{port}/img.png")
    await trusted.aclose()
    await untrusted.aclose()


async def test_data_uris_are_decoded_capped_and_sniffed(loopback_only: list[object]) -> None:
    downloader = SafeDownloader(DownloadPolicy(allowed_hosts=[], max_bytes=1000), resolver=FakeResolver({}))
    assert await downloader.fetch("data:image/png;base64," + base64.b64encode(IMAGE).decode()) == IMAGE
    with pytest.raises(DownloadRefused, match="larger"):
        await downloader.fetch("data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"0" * 2000).decode())
    with pytest.raises(DownloadRefused, match="base64"):
        await downloader.fetch("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(DownloadRefused, match="not a JPEG"):
        await downloader.fetch("data:text/plain;base64," + base64.b64encode(b"hello").decode())
    await downloader.aclose()
    assert loopback_only == []


def test_host_patterns() -> None:
    assert host_matches("a.replicate.delivery", ["*.replicate.delivery"])
    assert host_matches("REPLICATE.delivery.", ["replicate.delivery"])
    assert not host_matches("replicate.delivery", ["*.replicate.delivery"])
    assert not host_matches("evilreplicate.delivery", ["*.replicate.delivery"])
    assert not host_matches("replicate.delivery.evil.com", ["replicate.delivery", "*.replicate.delivery"])


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(("cert_for", "ok"), [("cdn.example.test", True), ("other.example.test", False)])
async def test_https_uses_the_checked_ip_with_the_original_name_for_sni_and_certificate(
    loopback_only: list[object], cert_for: str, ok: bool
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert(cert_for)

    async def image(request: Request) -> Response:
        return Response(IMAGE, media_type="image/png", headers={"x-host": request.headers["host"]})

    with cert.private_key_pem.tempfile() as key, cert.cert_chain_pems[0].tempfile() as chain:
        async with serve(
            Starlette(routes=[Route("/img.png", image)]), ssl_certfile=chain, ssl_keyfile=key
        ) as base:
            port = base.rsplit(":", 1)[1]
            client_ctx = ssl.create_default_context()
            ca.configure_trust(client_ctx)
            resolver = FakeResolver({"cdn.example.test": [["127.0.0.1"]]})
            downloader = SafeDownloader(
                DownloadPolicy(allowed_hosts=["cdn.example.test"], timeout=5),
                resolver=resolver,
                address_ok=loopback_allowed,
                verify=client_ctx,
            )
            url = f"https://cdn.example.test:{port}/img.png"
            if ok:
                assert await downloader.fetch(url) == IMAGE
            else:  # the certificate is checked against the URL's name, not the IP we connect to
                with pytest.raises(ProviderError, match="failed"):
                    await downloader.fetch(url)
            await downloader.aclose()
    assert resolver.calls == ["cdn.example.test"]
