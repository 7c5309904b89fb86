"""The HTTP layer under :mod:`app`: aiohttp's low-level server, answering even what its parser refuses in JSON.

Why this module exists: every answer of a Connect server must be the documented
``{"status": N, "message": "..."}`` with the ``1Password-Connect-Version`` header
(the Python SDK raises a JSON decode error on any other error body). aiohttp
answers some requests itself, before any application code runs: a request its
HTTP parser refuses (a NUL byte in a header, a bad request line, a broken chunked
body) gets a plain-text 400 from :meth:`aiohttp.web.RequestHandler.handle_error`,
which also logs a full traceback and quotes the offending bytes, so an
``Authorization`` header with a stray NUL put the token into the answer and the
log. :class:`ConnectHttpServer` is an :class:`aiohttp.web.Server` (served by an
:class:`aiohttp.web.ServerRunner`) whose connections are
:class:`ConnectRequestHandler`, which answers those requests in JSON with one log
line that names the kind of error and quotes nothing.

There is no :class:`aiohttp.web.Application` on top: :meth:`app.ConnectApi.handle`
routes every request itself, so nothing between the parser and it can answer in
plain text (aiohttp's router 404s a path holding an encoded newline, and its
``Expect`` handler answers 417 in plain text).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.streams import StreamReader

logger = logging.getLogger(__name__)

VERSION_HEADER = "1Password-Connect-Version"

HTTPS_ON_HTTP = "Received HTTPS traffic on an HTTP port"
"""aiohttp's fixed message for a TLS handshake sent to this plain-HTTP port."""
MAX_REASON_LENGTH = 80

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """Connect's error answer: ``{"status": N, "message": "..."}`` (the version header is added later)."""
    return web.json_response({"status": status, "message": message}, status=status, headers=headers)


def rejection_reason(exc: BaseException | None) -> str:
    """What was wrong with a request the parser refused, without a byte of the request.

    aiohttp's messages quote the offending line (``InvalidHeader`` its value,
    ``LineTooLong`` and ``BadStatusLine`` the line, llhttp's errors the bytes after a
    ``:`` and a blank line), so only the kind of error and the parser's fixed
    description, its first line, are kept.
    """
    if isinstance(exc, LineTooLong):
        return "Line too long"
    if isinstance(exc, InvalidHeader):
        return "Invalid header"
    if isinstance(exc, BadHttpMethod):
        return HTTPS_ON_HTTP if exc.message == HTTPS_ON_HTTP else "Invalid method"
    if isinstance(exc, BadStatusLine):
        return "Invalid request line"
    if isinstance(exc, InvalidURLError):
        return "Invalid request target"
    if isinstance(exc, PayloadEncodingError):
        return "Invalid body encoding"
    if isinstance(exc, HttpProcessingError):
        first = exc.message.split("\n", 1)[0].strip().rstrip(":").strip()
        if first:
            return first[:MAX_REASON_LENGTH]
    if isinstance(exc, web.RequestPayloadError) and exc.__cause__ is not None:
        return rejection_reason(exc.__cause__)
    return "Malformed request"


class ConnectRequestHandler(web.RequestHandler):
    """One connection: aiohttp's protocol, with error answers in Connect's JSON shape."""

    __slots__ = ("_connect_version",)

    def __init__(self, manager: web.Server, *, connect_version: str, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._connect_version = connect_version

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not hand to the API: parser errors, and crashes.

        aiohttp calls this with 400 for a request its parser refused, 500 when the request
        handler raised and 504 when it timed out. The connection is closed afterwards.
        """
        if request.writer.output_size > 0:
            # Part of an answer is out already; aiohttp then drops the connection.
            raise ConnectionError("an answer was partly sent; cannot send the error answer")
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.error("serving a request from %s failed", request.remote, exc_info=exc)
            text = "Something went wrong"
        elif 400 <= status < 500:
            text = f"{HTTPStatus(status).phrase}: {rejection_reason(exc)}"
            logger.warning("rejected a malformed request from %s: %s", request.remote, text)
        else:
            text = HTTPStatus(status).phrase
            logger.warning("request from %s: %s %s", request.remote, status, text)
        response = error_response(status, text, {VERSION_HEADER: self._connect_version})
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's error log: quiet for a broken request body, which has been answered already.

        When the parser refuses a body the API is reading (a bad gzip stream, say), the API
        answers 400 and logs the request; aiohttp then meets the same error again while it
        drains the rest of the body and would log it with a traceback as "Unhandled exception".
        """
        if isinstance(kwargs.get("exc_info"), web.RequestPayloadError):
            logger.debug("closing a connection whose request body was broken")
            return
        super().log_exception(*args, **kwargs)


class ConnectHttpServer(web.Server):
    """aiohttp's low-level server with :class:`ConnectRequestHandler` connections.

    ``handler`` answers every request the parser accepts; ``client_max_size`` bounds a
    request body (``request.read()`` raises 413 above it); other keyword arguments go to
    each :class:`ConnectRequestHandler` (``access_log=None``, timeouts, limits).
    """

    def __init__(
        self, handler: Handler, *, connect_version: str, client_max_size: int, **handler_args: Any
    ) -> None:
        super().__init__(handler, request_factory=self._request, **handler_args)
        self._connect_version = connect_version
        self._client_max_size = client_max_size
        self._handler_args = handler_args

    def __call__(self) -> ConnectRequestHandler:
        """A protocol for one new connection (the event loop calls this on accept)."""
        return ConnectRequestHandler(
            self,
            loop=asyncio.get_running_loop(),
            connect_version=self._connect_version,
            **self._handler_args,
        )

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=self._client_max_size,
        )
