"""HTTP fetching helpers shared by the http, csv and prometheus sources.

* a pooled :class:`requests.Session` with kpiwatch's User-Agent, which
  refuses redirects to another origin unless the source allows them;
* reading a streamed body against a deadline and a byte cap;
* what messages say: a URL without credentials or query string, the
  innermost cause of a connection error, a body's content type and start,
  a size limit, library texts with query strings hidden.
"""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util import Retry

from kpiwatch import __version__

CHUNK = 64 * 1024  # bytes asked of one socket read
SNIPPET = 200  # characters of a body shown in a message
# a query string after "scheme://..." or "/path": hidden in messages, it often holds keys
URL_QUERY = re.compile(r"((?:[a-zA-Z][a-zA-Z0-9+.-]*://|/)[^\s'\"?]*)\?[^\s'\"]+")
# urllib3's prefix naming the connection object: "<...HTTPConnection object at 0x..>: "
# (older) or "HTTPConnection(host='h', port=80): " (newer)
_OBJECT_REPR = re.compile(r"(<[\w.]+ object at 0x[0-9a-fA-F]+>|\b\w*Connection\([^)]*\)):?\s*")


class BodyTimeout(Exception):
    """The deadline passed before the body was read (the cause: a read timeout, if any)."""


class BodyTooLarge(Exception):
    """The body (or its declared Content-Length) is over the limit."""


class RedirectRefused(requests.RequestException):
    """A redirect to another origin, not followed: the message names its scheme://host[:port]."""


_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Session(requests.Session):
    """A session that checks every redirect's target before requesting it."""

    def __init__(self, *, follow_redirects: bool) -> None:
        super().__init__()
        self.follow_redirects = follow_redirects

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests asks this before each redirect it follows: refusing here means
        # the other origin never gets a request, nor the source's headers
        target = super().get_redirect_target(resp)
        if target is not None and not self.follow_redirects:
            check_redirect(resp.url, target)
        return target


def check_redirect(from_url: str, location: str) -> None:
    """Raise RedirectRefused if ``location`` (relative to ``from_url``) is another origin.

    The origin is scheme, host and port (the scheme's default if none): a
    source's headers (API keys, tokens) are meant for the host its URL names;
    requests drops only the Authorization header on such a redirect, the
    others (``X-Api-Key``) would go along.
    """
    target = urljoin(from_url, location)
    if _origin(target) != _origin(from_url):
        parts = urlsplit(target)
        shown = shown_url(f"{parts.scheme}://{parts.netloc}")
        raise RedirectRefused(
            f"redirected to {shown}, another origin: not followed "
            "(set follow_redirects: true on the source to allow it)"
        )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # not a number: no origin to compare, so never the same
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def new_session(
    *,
    accept: str,
    pool_maxsize: int,
    max_retries: Retry | int = 0,
    follow_redirects: bool = False,
) -> requests.Session:
    """A session for http:// and https:// with kpiwatch's User-Agent and ``accept``.

    It follows redirects within the origin of each request's URL; to another
    origin only with ``follow_redirects`` (the sources' rule key of that name).
    """
    adapter = requests.adapters.HTTPAdapter(max_retries=max_retries, pool_maxsize=pool_maxsize)
    session = _Session(follow_redirects=follow_redirects)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"kpiwatch/{__version__}"
    session.headers["Accept"] = accept
    return session


def read_body(
    response: requests.Response, *, deadline: float, limit: int, strict: bool = True
) -> bytes:
    """The decoded body of a streamed response, read by ``deadline`` (``time.monotonic()``).

    At most ``limit`` bytes: past it (or with a larger Content-Length), raise
    BodyTooLarge if ``strict``, else give back the first ``limit`` bytes.
    Raise BodyTimeout when the deadline passes. The body is read one socket
    read at a time, each waiting no longer than the time left, so a server
    dripping bytes cannot hold the fetch past the deadline.
    """
    if strict:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BodyTimeout
        _limit_socket(response, left)
        try:
            # read1: at most one socket read, so the deadline is checked between drips
            chunk = response.raw.read1(CHUNK, decode_content=True)
        except (ReadTimeoutError, TimeoutError) as exc:
            raise BodyTimeout from exc
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            if strict:
                raise BodyTooLarge
            return b"".join(chunks)[:limit]


def _limit_socket(response: requests.Response, seconds: float) -> None:
    """Let the next socket read wait no longer than ``seconds``.

    urllib3 set the read timeout when it sent the request; headers that came
    late would otherwise leave a full timeout for each read of the body.
    urllib3 sets the timeout again when it reuses the connection. When the
    server closes after the body, http.client has already detached the socket
    from the connection: it is then only reachable through the response's file
    (private attributes, so looked up defensively; without it a stalled body
    can take up to one more timeout).
    """
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:
        reader = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(seconds)


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` itself is a timeout of requests, urllib3 or a socket."""
    return isinstance(exc, requests.Timeout | ReadTimeoutError | TimeoutError)


def shown_url(url: str) -> str:
    """scheme://host[:port]/path: no credentials, no query string, no fragment."""
    parts = urlsplit(url)
    if not parts.netloc:  # not a URL requests can use; there is no user:password to drop
        return url.split("?")[0].split("#")[0]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def scrub_query(text: str) -> str:
    """``text`` with every URL's query string shown as ``?…``: library messages quote them."""
    return URL_QUERY.sub(r"\1?…", text)


def describe(exc: BaseException) -> str:
    """The innermost cause, on one line: outer requests/urllib3 texts repeat the full URL."""
    while True:
        if isinstance(exc, MaxRetryError) and exc.reason is not None:
            exc = exc.reason
        elif (
            isinstance(exc, requests.RequestException)
            and exc.args
            and isinstance(exc.args[0], BaseException)
        ):
            exc = exc.args[0]
        else:
            break
    text = _OBJECT_REPR.sub("", str(exc))
    return " ".join(text.split()) or type(exc).__name__


def server_side(status: int) -> bool:
    """Whether an HTTP error status is the server's (down, overloaded, refusing our
    credentials) rather than this request's: every KPI of the source would get it."""
    return status >= 500 or status in (401, 403, 407, 429)


def content_type(response: requests.Response) -> str:
    """The media type of the Content-Type header, without parameters ("" if none)."""
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def status_line(response: requests.Response) -> str:
    """``HTTP 503 Service Unavailable``."""
    return f"HTTP {response.status_code} {response.reason or ''}".rstrip()


def body_description(media_type: str, body: bytes) -> str:
    """What came instead of the expected body: its content type and start, or "an empty body"."""
    if not body.strip():
        return "an empty body"
    return f"{media_type or 'no Content-Type'}: {snippet(body)}"


def snippet(value: object) -> str:
    """The start of a body or JSON value, on one line, quoted."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return repr(text if len(text) <= SNIPPET else text[:SNIPPET] + "…")


def size(limit: int) -> str:
    """A byte count as people write limits: ``10 MiB``, ``1 KiB``, ``1000 bytes``."""
    for unit, unit_size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= unit_size and limit % unit_size == 0:
            return f"{limit // unit_size} {unit}"
    return f"{limit} bytes"
