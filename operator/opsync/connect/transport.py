"""The network layer under the Connect client's ``httpx.AsyncClient``: aiohttp's connection pool.

Why this module exists: CPU. Profiling the operator's cold start (1,000
OnePasswordItems) showed httpx's default transport, httpcore, spending about
2 ms of CPU per request at 10 requests in flight, in its pool bookkeeping
(``_assign_requests_to_connections``, ``has_expired`` through anyio's
``get_extra_info``, sniffio's ``current_async_library``, shielded cancel
scopes...). Against the local Connect server (1,000 GETs of an item, 10 in
flight, 10 connections) httpx's default transport took 1.65-1.70 ms of CPU per
request, httpx over an aiohttp transport 0.31-0.32 ms. aiohttp is in the
process anyway (kopf's HTTP client), so :class:`AiohttpTransport` puts its pool
under httpx: httpx stays the client's API (requests, responses, content
decoding, errors), only the bytes go through aiohttp.

Why not the ``httpx-aiohttp`` package: its exception map turns every
``aiohttp.ClientConnectionError`` (refused connection, server disconnect,
connection reset while the answer was read) into ``httpx.ConnectTimeout``. The
client takes ``ConnectError``/``ConnectTimeout``/``PoolTimeout`` to mean "the
request never left", and retries a ``POST`` after them: a create that reached
Connect would be sent again, and a refused connection would read "timed out".
Here each aiohttp failure becomes the httpx error that says what happened:

=====================================================  ==============================
aiohttp (or this module)                               httpx
=====================================================  ==============================
no free connection within ``pool`` (this module)       ``PoolTimeout``
``ConnectionTimeoutError``                             ``ConnectTimeout``
``ClientConnectorError`` and its subclasses (refused,  ``ConnectError``
DNS, TLS handshake and certificate errors)
``InvalidURL``, ``NonHttpUrlClientError``              ``UnsupportedProtocol``
``SocketTimeoutError``, other ``ServerTimeoutError``   ``ReadTimeout``
``ServerDisconnectedError``                            ``RemoteProtocolError``
``ClientPayloadError`` (body cut short or malformed),  ``RemoteProtocolError``
``ClientResponseError`` (unparsable answer)
``ClientOSError`` (reset, broken pipe), any other      ``ReadError``
``ClientConnectionError``
the request not written within ``connect + write +     ``WriteTimeout``
read`` (this module)
any other ``aiohttp.ClientError``                      ``TransportError``
=====================================================  ==============================

The first three rows are what the client counts as "never sent" (an invalid URL
is never sent either, but cannot happen with a validated host); everything once
a connection was made counts as possibly received. The aiohttp error is kept as
``__cause__`` and named in the message.

Timeouts: httpx hands each request its ``connect``/``read``/``write``/``pool``
timeouts as ``request.extensions["timeout"]``; aiohttp has other knobs, so:

* ``pool``: aiohttp bounds the wait for a free connection and the making of a
  new one with one timer (``ClientTimeout.connect``) and raises the same
  ``ConnectionTimeoutError`` for both, so the two could not be told apart. The
  transport therefore holds its own slot per request in flight (as many as the
  pool has connections, released when the response is closed) and waits at most
  ``pool`` for one (``PoolTimeout``); aiohttp's queue stays empty.
* ``connect``: ``ClientTimeout.sock_connect`` (each TCP connect and TLS
  handshake) and ``ClientTimeout.connect`` (the whole of making a connection,
  name resolution included), both ``connect``; httpcore bounds connect and TLS
  handshake by ``connect`` each, so this is, if anything, stricter.
* ``read``: ``ClientTimeout.sock_read``, the longest silence while waiting for
  the answer or its body (aiohttp restarts it on every chunk received), as
  httpcore's per-read timeout.
* ``write``: aiohttp has none (its read timer starts once the request is
  written). A request whose headers have not come back within ``connect +
  write + read`` is abandoned as ``WriteTimeout``: the other timers fire first
  unless the write itself stalled.

No total timeout (a large file download may take long while data flows).

Other choices: the request goes out as httpx built it: its headers (names as
written, in order; aiohttp's automatic ``Accept``, ``Accept-Encoding``,
``User-Agent`` and ``Content-Type`` are skipped; the one thing aiohttp adds is
``Content-Length: 0`` to a ``DELETE`` without a body) and its URL, not
re-encoded by yarl. aiohttp does not decompress (httpx decodes
``Content-Encoding``), follow redirects, keep cookies, read proxy settings from
the environment (the client mounts httpx's proxy transports for those), or
send a ``GET``/``PUT``/``DELETE`` a second time by itself after a dropped
connection (it does by default; the client's retry policy decides and counts
every attempt).
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Final

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]

_SKIPPED_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
"""Headers aiohttp adds when a request lacks them: the request carries exactly httpx's headers."""

_ERRORS: Final[tuple[tuple[type[aiohttp.ClientError], type[httpx.TransportError]], ...]] = (
    # No connection to send on: the request never left.
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    # The request may have been (partly) received.
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.ClientError, httpx.TransportError),
)
"""Each aiohttp error and the httpx error it becomes, the most specific first (the first match wins)."""

_HTTP_11: Final = b"HTTP/1.1"
_LARGE_BODY: Final = 1 << 20


def _httpx_error(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    """The httpx error for an aiohttp one (see the table in the module docstring)."""
    for aiohttp_error, httpx_error in _ERRORS:
        if isinstance(exc, aiohttp_error):
            return httpx_error(f"{type(exc).__name__}: {exc}", request=request)
    raise AssertionError("unreachable: aiohttp.ClientError is the last row")  # pragma: no cover


class _ResponseStream(httpx.AsyncByteStream):
    """The body of an aiohttp response, chunk by chunk as it arrives; closing it frees the connection."""

    __slots__ = ("_free", "_request", "_response")

    def __init__(
        self, response: aiohttp.ClientResponse, request: httpx.Request, free: Callable[[], None]
    ) -> None:
        self._response = response
        self._request = request
        self._free: Callable[[], None] | None = free

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise _httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end; otherwise aiohttp closes the connection.
        self._response.release()
        if self._free is not None:
            self._free()
            self._free = None


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one ``aiohttp.ClientSession``, made on the first request.

    ``verify`` is what httpx's ``verify`` would be: an SSL context, ``True``
    for the system's CAs, ``False`` for no certificate verification.
    ``max_connections`` bounds the connections, and so the requests in flight;
    idle ones are closed after ``keepalive_expiry`` seconds (``None``: never),
    as with ``httpx.Limits``.
    """

    def __init__(
        self, *, verify: ssl.SSLContext | bool, max_connections: int, keepalive_expiry: float | None = 5.0
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._verify = verify
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max_connections)  # made again with the session, in its loop

    def _open(self) -> aiohttp.ClientSession:
        """The session, in the running event loop (aiohttp binds it to the loop it is made in)."""
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive_expiry, ssl=self._verify
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIPPED_AUTO_HEADERS,
            trust_env=False,
        )
        # aiohttp sends a GET, PUT or DELETE once more, at once, when the connection drops under it
        # (no public switch, aiohttp issue 10790; its own TestClient turns it off this way). The
        # client's retry policy decides instead, with backoff, and counts every attempt.
        session._retry_connection = False
        self._slots = asyncio.Semaphore(self._max_connections)
        self._session = session
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None:
            session = self._open()
        timeouts = request.extensions.get("timeout", {})
        connect, read = timeouts.get("connect"), timeouts.get("read")
        write, pool = timeouts.get("write"), timeouts.get("pool")
        try:
            content = request.content
        except httpx.RequestNotRead:
            content = await request.aread()
        body: bytes | io.BytesIO | None = content
        if not content:
            body = None  # not b"": aiohttp would send "Content-Length: 0" with a GET
        elif len(content) > _LARGE_BODY:
            body = io.BytesIO(content)  # as bytes, aiohttp warns (ResourceWarning) about a large body

        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(pool):
                    await slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout(
                    f"no free connection within {pool} s ({self._max_connections} in use)", request=request
                ) from exc
        else:
            await slots.acquire()  # free: returns at once

        limit = None if connect is None or write is None or read is None else connect + write + read
        timer = asyncio.timeout(limit)
        try:
            async with timer:
                response = await session.request(
                    request.method,
                    URL(str(request.url), encoded=True),
                    headers=[
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in request.headers.raw
                    ],
                    data=body,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(connect=connect, sock_connect=connect, sock_read=read),
                )
        except BaseException as exc:
            slots.release()
            if isinstance(exc, aiohttp.ClientError):
                raise _httpx_error(exc, request) from exc
            if isinstance(exc, TimeoutError) and timer.expired():
                raise httpx.WriteTimeout(
                    f"request not written within its write timeout (no answer after {limit} s)",
                    request=request,
                ) from exc
            raise

        version = response.version
        if version is None or version == aiohttp.HttpVersion11:
            http_version = _HTTP_11
        else:
            http_version = f"HTTP/{version.major}.{version.minor}".encode()
        extensions = {"http_version": http_version}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", errors="replace")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request, slots.release),
            extensions=extensions,
        )

    async def aclose(self) -> None:
        """Close the pool and every connection in it."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
