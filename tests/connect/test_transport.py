"""The aiohttp transport under the Connect client, against real servers on loopback.

The healthy paths run against the project's Connect server; each failure is
made by a small raw asyncio server that misbehaves on purpose (closes, resets,
stops mid-body, goes silent, never reads), and counts the connections it
accepted and the requests it received in full. What matters is checked through
:class:`ConnectClient`: which message the failure gets, and whether a ``POST``
is retried (only when it cannot have reached the server).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import httpx
import pytest

from opsync.connect.client import ConnectClient, scim_eq
from opsync.connect.config import ConnectConfig
from opsync.connect.models import FullItem
from opsync.connect.transport import AiohttpTransport
from opsync.core.errors import ConnectUnavailable, NotFound, ServerError
from opsync.tooling.connectserver import ConnectServer
from opsync.tooling.controlplane import write_pki
from tests.connect.ids import oid

VAULT = oid("transportvault")
ITEM = oid("transportitem")
FILE = oid("transportfile")
MISSING = oid("missing")
FILE_CONTENT = os.urandom(300_000)  # several of aiohttp's 64 KiB reads
RETRIES = 2

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request (given, read in full already); True keeps the connection open for the next one."""


class RawServer:
    """An HTTP/1.1 server on loopback that answers every request with ``answer``.

    Without an answer it is deaf: it accepts connections and never reads a byte
    from them (no request, no TLS handshake). ``requests`` holds each request
    received in full (head and body), ``received`` is set at the first one,
    ``connections`` counts the connections accepted, ``peak_open`` the most
    open at once.
    """

    def __init__(self, answer: Answer | None) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.received = asyncio.Event()
        self.connections = 0
        self.open = 0
        self.peak_open = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, context: ssl.SSLContext | None = None) -> RawServer:
        listener = socket.socket()
        # A small receive buffer (accepted connections inherit it): a request nobody reads stalls soon.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._serve, sock=listener, ssl=context)
        port = listener.getsockname()[1]
        self.url = f"{'https' if context else 'http'}://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            if self.answer is None:
                await asyncio.Event().wait()  # deaf until the server stops
            keep = True
            while keep:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                self.received.set()
                keep = await self.answer(request, writer)
        except asyncio.CancelledError:
            return  # stopped: end quietly (asyncio logs a cancelled connection handler as an error)
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)


RawServerFactory = Callable[..., Awaitable[RawServer]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServerFactory]:
    servers: list[RawServer] = []

    async def start(answer: Answer | None, context: ssl.SSLContext | None = None) -> RawServer:
        server = await RawServer(answer).start(context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def respond(
    status: bytes, body: bytes = b"[]", headers: bytes = b"Content-Type: application/json\r\n"
) -> Answer:
    """An answer: ``HTTP/1.1 <status>``, the headers, the body with its length; the connection stays."""

    async def answer(_request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 " + status + b"\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        return True

    return answer


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP reset (RST), not a clean close (FIN)."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_at_once(_request: bytes, _writer: asyncio.StreamWriter) -> bool:
    return False


async def reset_at_once(_request: bytes, writer: asyncio.StreamWriter) -> bool:
    reset(writer)
    return False


async def half_a_body(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[" + b" " * 99
    )
    await writer.drain()
    await asyncio.sleep(0.05)  # the client has the part before the connection ends


async def half_a_body_then_close(_request: bytes, writer: asyncio.StreamWriter) -> bool:
    await half_a_body(writer)
    return False


async def half_a_body_then_reset(_request: bytes, writer: asyncio.StreamWriter) -> bool:
    await half_a_body(writer)
    reset(writer)
    return False


async def half_a_body_then_silence(_request: bytes, writer: asyncio.StreamWriter) -> bool:
    await half_a_body(writer)
    await asyncio.Event().wait()
    return False


async def silence(_request: bytes, _writer: asyncio.StreamWriter) -> bool:
    await asyncio.Event().wait()
    return False


def slowly(seconds: float, answer: Answer) -> Answer:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(seconds)
        return await answer(request, writer)

    return slow


def config(url: str, token: str = "token", **settings: Any) -> ConnectConfig:
    """Quick retries (2), and one connection: a connection not given back would fail the next attempt."""
    options = {
        "max_retries": RETRIES,
        "backoff_initial": 0.001,
        "backoff_max": 0.002,
        "timeout": 2.0,
        "max_connections": 1,
        "max_concurrency": 1,
    } | settings
    return ConnectConfig(host=url, token=token, **options)


def new_item() -> FullItem:
    return FullItem(title="new", category="LOGIN")


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Attempts(list[tuple[str, str]]):
    """The client's observer: (method, status) of every attempt."""

    def __call__(self, method: str, _template: str, status: str, _seconds: float) -> None:
        self.append((method, status))


def causes(error: BaseException) -> list[BaseException]:
    """The error's chain of causes, outermost first."""
    chain = []
    cause = error.__cause__
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    return chain


# -- the healthy path, against the Connect server ---------------------------------------------------


@pytest.fixture
async def connect(connect_server_factory: Callable[..., Awaitable[ConnectServer]]) -> ConnectServer:
    data = {
        "vaults": [
            {
                "id": VAULT,
                "name": "Transport",
                "items": [
                    {
                        "id": ITEM,
                        "title": "item",
                        "category": "LOGIN",
                        "fields": [{"id": "password", "purpose": "PASSWORD", "value": "pw"}],
                        "files": [{"id": FILE, "name": "blob.bin", "content": FILE_CONTENT}],
                    }
                ],
            }
        ]
    }
    return await connect_server_factory(data)


async def test_reads_and_a_binary_download_go_through_aiohttp(connect: ConnectServer) -> None:
    settings = config(connect.url, connect.issue_token([VAULT]), max_connections=4, max_concurrency=4)
    async with ConnectClient(settings) as client:
        assert isinstance(client._http._transport, AiohttpTransport)
        item, contents = await client.get_item_with_files(VAULT, ITEM)
        assert item.id == ITEM
        assert contents[FILE].get_secret_value() == FILE_CONTENT
        with pytest.raises(NotFound, match=f"item {MISSING} not found") as caught:
            await client.get_item(VAULT, MISSING)
    assert caught.value.status == 404


async def test_a_non_2xx_answer_is_the_typed_error_with_the_servers_reason(
    raw_server: RawServerFactory,
) -> None:
    server = await raw_server(respond(b"503 Connect Is Resting", b"busy", b"Content-Type: text/plain\r\n"))
    async with ConnectClient(config(server.url)) as client:
        with pytest.raises(
            ServerError, match=r"answered 503 on GET /v1/vaults: Connect Is Resting \(gave up"
        ):
            await client.list_vaults()
    assert len(server.requests) == 1 + RETRIES


async def test_a_gzip_encoded_answer_is_decoded_once(raw_server: RawServerFactory) -> None:
    vaults = [{"id": oid(f"vault{n}"), "name": f"vault {n}"} for n in range(200)]
    body = gzip.compress(json.dumps(vaults).encode())
    headers = b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
    server = await raw_server(respond(b"200 OK", body, headers))
    async with ConnectClient(config(server.url)) as client:
        assert [vault.name for vault in await client.list_vaults()] == [v["name"] for v in vaults]
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in server.requests[0]


async def test_requests_on_the_wire_are_httpxs_own(raw_server: RawServerFactory) -> None:
    """Method, target (percent-encoding untouched), headers (names, case, order) and body are those
    httpx's own transport sends; aiohttp adds nothing but a "Content-Length: 0" to a DELETE."""
    item = json.dumps({"id": ITEM, "vault": {"id": VAULT}, "category": "LOGIN"}).encode()
    listing = respond(b"200 OK", b"[]")
    one = respond(b"200 OK", item)

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        return await (listing if b"?filter=" in request.split(b"\r\n")[0] else one)(request, writer)

    server = await raw_server(answer)
    sent: list[list[bytes]] = []
    for transport in (httpx.AsyncHTTPTransport(), None):
        server.requests.clear()
        async with ConnectClient(config(server.url), transport=transport) as client:
            await client.get_item(VAULT, "a/b c+d")
            await client.find_items(VAULT, 'say "hi" + ü')
            await client.create_item(VAULT, new_item())
            await client.delete_item(VAULT, ITEM)
        sent.append(list(server.requests))
    httpcore, aiohttp_ = sent
    assert aiohttp_[:3] == httpcore[:3]
    assert aiohttp_[3] == httpcore[3].replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
    assert aiohttp_[0].startswith(f"GET /v1/vaults/{VAULT}/items/a%2Fb%20c%2Bd HTTP/1.1\r\n".encode())
    assert scim_eq("title", 'say "hi" + ü') in unquote_plus(aiohttp_[1].split(b" ")[1].decode())


# -- no connection: the request never left, a create is retried -----------------------------------


async def test_a_refused_connection_could_not_be_reached_and_a_create_is_retried() -> None:
    attempts = Attempts()
    async with ConnectClient(config(f"http://127.0.0.1:{free_port()}"), observer=attempts) as client:
        with pytest.raises(ConnectUnavailable, match=r"could not be reached \(ConnectError\)") as caught:
            await client.create_item(VAULT, new_item())
    assert attempts == [("POST", "error")] * (1 + RETRIES)
    assert [type(cause) for cause in causes(caught.value)][:2] == [
        httpx.ConnectError,
        aiohttp.ClientConnectorError,
    ]


async def test_a_stalled_tls_handshake_is_a_connect_timeout_and_a_create_is_retried(
    raw_server: RawServerFactory,
) -> None:
    server = await raw_server(None)  # accepts, never answers the TLS handshake
    attempts = Attempts()
    settings = config(server.url.replace("http:", "https:"), connect_timeout=0.2, timeout=5.0)
    async with ConnectClient(settings, observer=attempts) as client:
        with pytest.raises(ConnectUnavailable, match=r"timed out \(ConnectTimeout\)"):
            await client.create_item(VAULT, new_item())
    assert attempts == [("POST", "error")] * (1 + RETRIES)
    assert server.connections == 1 + RETRIES


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A private CA (returned) and a serving certificate for 127.0.0.1 it signed."""
    write_pki(tmp_path)
    return tmp_path


@pytest.fixture
async def tls_server(raw_server: RawServerFactory, pki: Path) -> RawServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
    created = {"id": ITEM, "vault": {"id": VAULT}, "category": "LOGIN"}
    return await raw_server(respond(b"200 OK", json.dumps(created).encode()), context)


async def test_tls_with_the_custom_ca_works(tls_server: RawServer, pki: Path) -> None:
    async with ConnectClient(config(tls_server.url, ca_bundle=pki / "ca.crt")) as client:
        assert (await client.create_item(VAULT, new_item())).id == ITEM
    assert len(tls_server.requests) == 1


async def test_tls_without_the_ca_fails_before_sending_and_a_create_is_retried(tls_server: RawServer) -> None:
    attempts = Attempts()
    async with ConnectClient(config(tls_server.url), observer=attempts) as client:
        with pytest.raises(ConnectUnavailable, match=r"could not be reached \(ConnectError\)") as caught:
            await client.create_item(VAULT, new_item())
    assert attempts == [("POST", "error")] * (1 + RETRIES)
    assert tls_server.requests == []
    assert isinstance(causes(caught.value)[1], aiohttp.ClientConnectorCertificateError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value.__cause__)


# -- the connection broke after the request was sent: a read is retried, a create is not -----------


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (close_at_once, "RemoteProtocolError"),
        (reset_at_once, "ReadError"),
        (half_a_body_then_close, "RemoteProtocolError"),
        (half_a_body_then_reset, "RemoteProtocolError"),
    ],
)
async def test_a_broken_answer_retries_a_read_and_never_a_create(
    raw_server: RawServerFactory, answer: Answer, error: str
) -> None:
    server = await raw_server(answer)
    async with ConnectClient(config(server.url)) as client:
        with pytest.raises(ConnectUnavailable, match=rf"could not be reached \({error}\)"):
            await client.list_vaults()
        # Retried by the client only: aiohttp sends no GET again by itself.
        assert len(server.requests) == 1 + RETRIES
        server.requests.clear()
        with pytest.raises(ConnectUnavailable, match=rf"could not be reached \({error}\)") as caught:
            await client.create_item(VAULT, new_item())
        assert len(server.requests) == 1
    assert isinstance(causes(caught.value)[1], aiohttp.ClientError)


@pytest.mark.parametrize("answer", [silence, half_a_body_then_silence])
async def test_silence_is_a_read_timeout_and_a_create_is_not_retried(
    raw_server: RawServerFactory, answer: Answer
) -> None:
    server = await raw_server(answer)
    async with ConnectClient(config(server.url, timeout=0.2)) as client:
        with pytest.raises(ConnectUnavailable, match=r"timed out \(ReadTimeout\)"):
            await client.list_vaults()
        assert len(server.requests) == 1 + RETRIES
        server.requests.clear()
        with pytest.raises(ConnectUnavailable, match=r"timed out \(ReadTimeout\)"):
            await client.create_item(VAULT, new_item())
        assert len(server.requests) == 1


# -- proxies from the environment ------------------------------------------------------------------


async def test_proxies_from_the_environment_still_apply(
    connect: ConnectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx mounts no environment proxy once given a transport: the client mounts them itself."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", connect.url)  # the Connect server serves absolute-form targets too
    settings = config("http://connect.invalid:8080", connect.issue_token([VAULT]), max_retries=0)
    async with ConnectClient(settings) as client:
        assert [vault.id for vault in await client.list_vaults()] == [VAULT]
    monkeypatch.setenv("NO_PROXY", "connect.invalid")
    async with ConnectClient(settings) as client:
        with pytest.raises(ConnectUnavailable, match=r"could not be reached \(ConnectError\)") as caught:
            await client.list_vaults()
    # Not proxied: straight to the aiohttp transport, which cannot resolve the name.
    assert isinstance(causes(caught.value)[1], aiohttp.ClientConnectorDNSError)


# -- the transport itself: pool, write timeout, URLs -----------------------------------------------


def http(server: RawServer, transport: AiohttpTransport, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, transport=transport, timeout=httpx.Timeout(5.0, **timeouts))


async def test_aiohttp_adds_no_header_and_reencodes_no_url(raw_server: RawServerFactory) -> None:
    """What httpx leaves out stays out (aiohttp would add Accept, Accept-Encoding, User-Agent and a
    Content-Type), and the URL goes as httpx encoded it (yarl would turn %7E into ~, %41 into A)."""
    server = await raw_server(respond(b"200 OK"))
    sent: list[list[bytes]] = []
    for transport in (httpx.AsyncHTTPTransport(), AiohttpTransport(verify=False, max_connections=1)):
        server.requests.clear()
        async with httpx.AsyncClient(transport=transport) as client:
            for name in ("Accept", "Accept-Encoding", "User-Agent"):
                del client.headers[name]
            await client.get(f"{server.url}/a%7Eb/%2f?x=%41&y=a+b")
            await client.post(f"{server.url}/raw", content=b"raw bytes")
        sent.append(list(server.requests))
    assert sent[1] == sent[0]
    assert sent[1][0].startswith(b"GET /a%7Eb/%2f?x=%41&y=a+b HTTP/1.1\r\nHost: 127.0.0.1:")
    assert sent[1][1].endswith(b"\r\nContent-Length: 9\r\n\r\nraw bytes")


async def test_the_pool_never_holds_more_than_max_connections(raw_server: RawServerFactory) -> None:
    server = await raw_server(slowly(0.02, respond(b"200 OK")))
    async with http(server, AiohttpTransport(verify=False, max_connections=3)) as client:
        answers = await asyncio.gather(*(client.get(f"/{n}") for n in range(12)))
    assert [answer.status_code for answer in answers] == [200] * 12
    assert len(server.requests) == 12
    assert server.peak_open == 3
    assert server.connections == 3  # kept alive and reused


async def test_waiting_longer_than_pool_for_a_connection_is_a_pool_timeout(
    raw_server: RawServerFactory,
) -> None:
    server = await raw_server(slowly(0.5, respond(b"200 OK")))
    async with http(server, AiohttpTransport(verify=False, max_connections=1), pool=0.1) as client:
        first = asyncio.create_task(client.get("/first"))
        await server.received.wait()
        with pytest.raises(httpx.PoolTimeout):
            await client.get("/second")
        assert (await first).status_code == 200
        assert (await client.get("/third")).status_code == 200  # the connection came back
    assert [request.split(b" ")[1] for request in server.requests] == [b"/first", b"/third"]


async def test_a_cancelled_request_gives_its_connection_back(raw_server: RawServerFactory) -> None:
    mute = await raw_server(silence)
    server = await raw_server(respond(b"200 OK"))
    async with http(server, AiohttpTransport(verify=False, max_connections=1), pool=0.5) as client:
        stuck = asyncio.create_task(client.get(f"{mute.url}/stuck"))
        await mute.received.wait()
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        assert (await client.get("/next")).status_code == 200


async def test_a_request_the_server_does_not_read_is_a_write_timeout(raw_server: RawServerFactory) -> None:
    """aiohttp has no write timeout; the transport gives up after connect + write + read."""
    server = await raw_server(None)
    transport = AiohttpTransport(verify=False, max_connections=1)
    async with http(server, transport, connect=0.5, read=0.2, write=0.2) as client:
        async with asyncio.timeout(5):
            with pytest.raises(httpx.WriteTimeout):
                await client.post("/big", content=b"x" * (32 << 20))


async def test_a_url_aiohttp_cannot_send_is_an_unsupported_protocol() -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport(verify=False, max_connections=1)) as client:
        with pytest.raises(httpx.UnsupportedProtocol) as caught:
            await client.get("ftp://127.0.0.1/file")
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
