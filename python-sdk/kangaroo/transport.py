"""HTTPS transport of the gateway client: keep-alive, retries, resumable downloads.

Standard library only (``http.client`` + ``ssl``). TLS verification is always
on: with ``ca_cert`` the server certificate must chain to that file (the local
cluster's self-signed certificate is its own CA), otherwise to the system
store, and the host name must match. TLS 1.2 is the minimum (as the gateway).

Each thread keeps one persistent connection (HTTP/1.1 keep-alive). Requests
marked idempotent are retried with exponential backoff and jitter after
connection errors and 502/503/504 answers; the caller makes a submission
idempotent with an ``Idempotency-Key`` header reused across those retries.
:meth:`Transport.download` resumes an interrupted body with
``Range: bytes=N-`` and checks that the total length and the ETag stay the
same across the parts.
"""

from __future__ import annotations

import http.client
import random
import re
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from . import __version__
from .errors import DownloadError, GatewayError, GatewayUnavailableError, error_from_response

__all__ = ["Response", "Transport", "EventStream"]

_RETRY_STATUS = (502, 503, 504)
# How a keep-alive connection the server has closed fails on reuse.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name.lower(), default)


def _retryable(exc: BaseException) -> bool:
    """Connection-level failures worth another try; certificate and protocol
    misconfiguration are not (retrying cannot fix them)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    if isinstance(exc, ssl.SSLError):
        # A reset during the handshake surfaces as SSLError too; wrong versions do not heal.
        return "WRONG_VERSION_NUMBER" not in str(exc) and "UNSUPPORTED_PROTOCOL" not in str(exc)
    return isinstance(exc, (OSError, http.client.HTTPException))


class Transport:
    """One gateway endpoint: base URL, bearer token, TLS context, retry policy."""

    def __init__(
        self,
        url: str,
        token: Optional[str],
        ca_cert: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https":
            raise ValueError(f"the gateway URL must be https://HOST:PORT, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"the gateway URL has no host: {url!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self.context = ssl.create_default_context(cafile=ca_cert) if ca_cert else ssl.create_default_context()
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._local = threading.local()
        self._open: set = set()  # every thread's persistent connection, for close()
        self._idle_streams: List[http.client.HTTPSConnection] = []  # kept by ended event streams
        self._open_lock = threading.Lock()
        # Counters for diagnostics and tests: connections opened, retries taken.
        self.connections_opened = 0
        self.retries_taken = 0
        self.stale_reconnects = 0

    # -- connections ------------------------------------------------------

    def _new_connection(self, timeout: Optional[float] = None) -> http.client.HTTPSConnection:
        self.connections_opened += 1
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout or self.timeout,
                                           context=self.context)

    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._new_connection()
            with self._open_lock:
                self._open.add(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._open_lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        """Closes the persistent connections of every thread; later requests reconnect."""
        with self._open_lock:
            conns, self._open = list(self._open), set()
            conns += self._idle_streams
            self._idle_streams = []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def __del__(self) -> None:
        # An unclosed client should not leave sockets for the garbage collector to warn about.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing useful to do during finalization
            pass

    def _headers(self, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
        h = {"User-Agent": f"kangaroo-python/{__version__}", "Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if extra:
            h.update(extra)
        return h

    def _delay(self, attempt: int, retry_after: Optional[str] = None) -> float:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        if retry_after:
            try:
                delay = min(self.max_backoff * 4, max(delay, float(retry_after)))
            except ValueError:
                pass
        return delay * (0.5 + random.random() / 2)

    def _unavailable(self, method: str, path: str, exc: BaseException, attempts: int) -> GatewayUnavailableError:
        return GatewayUnavailableError(
            f"{method} {self.url}{path} failed after {attempts} attempt(s): {type(exc).__name__}: {exc}")

    # -- requests ---------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotent: Optional[bool] = None,
        what: str = "",
        ok: Tuple[int, ...] = (200, 201),
    ) -> Response:
        """Sends one request and reads the whole answer.

        Retries (when ``idempotent``, by default for GET) after connection
        errors and 502/503/504; a status outside ``ok`` raises the mapped
        :class:`~kangaroo.errors.GatewayError` (``what`` tells 404s apart)."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        h = self._headers(headers)
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        attempt = 0
        stale_retry = True
        while True:
            reused = getattr(self._local, "conn", None) is not None
            try:
                conn = self._connection()
                conn.request(method, self.prefix + path, body=body, headers=h)
                resp = conn.getresponse()
                data = resp.read()
            except ssl.SSLCertVerificationError as e:
                self._drop()
                raise GatewayError(
                    f"TLS verification of {self.url} failed: {e.verify_message or e} (is ca_cert the gateway's "
                    "certificate, and does the URL's host appear in it?)") from e
            except Exception as e:  # noqa: BLE001 - classified by _retryable
                self._drop()
                if not _retryable(e):
                    raise
                if idempotent and reused and stale_retry and isinstance(e, _STALE):
                    # The server closed an idle keep-alive connection: reconnect at once.
                    stale_retry = False
                    self.stale_reconnects += 1
                    continue
                if not idempotent or attempt >= self.retries:
                    raise self._unavailable(method, path, e, attempt + 1) from e
                self._sleep(self._delay(attempt))
                attempt += 1
                self.retries_taken += 1
                continue
            headers_out = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self._drop()
            if resp.status in _RETRY_STATUS and idempotent and attempt < self.retries:
                self._sleep(self._delay(attempt, headers_out.get("retry-after")))
                attempt += 1
                self.retries_taken += 1
                continue
            if resp.status not in ok:
                raise error_from_response(resp.status, data, what=what)
            return Response(resp.status, headers_out, data)

    # -- server-sent events -----------------------------------------------

    def _stream_connection(self, read_timeout: Optional[float]) -> Tuple[http.client.HTTPSConnection, bool]:
        """A connection for an event stream: an idle one left by an earlier
        stream that ended cleanly (no new TLS handshake), else a new one."""
        with self._open_lock:
            conn = self._idle_streams.pop() if self._idle_streams else None
        if conn is None:
            return self._new_connection(read_timeout), False
        conn.timeout = read_timeout or self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        return conn, True

    def _stream_ended(self, conn: http.client.HTTPSConnection, reusable: bool) -> None:
        if reusable:
            with self._open_lock:
                if len(self._idle_streams) < 4:
                    self._idle_streams.append(conn)
                    return
        conn.close()

    def open_events(self, path: str, *, what: str = "", read_timeout: Optional[float] = None) -> "EventStream":
        """Opens an SSE stream on a connection of its own (a stream holds its
        connection until it ends; one that ended cleanly is kept for the next
        stream). Connection failures are retried like GETs."""
        attempt = 0
        while True:
            conn, reused = self._stream_connection(read_timeout)
            try:
                conn.request("GET", self.prefix + path, headers=self._headers({"Accept": "text/event-stream"}))
                resp = conn.getresponse()
            except Exception as e:  # noqa: BLE001
                conn.close()
                if reused:
                    continue  # the server closed the idle connection meanwhile
                if not _retryable(e) or attempt >= self.retries:
                    raise self._unavailable("GET", path, e, attempt + 1) from e
                self._sleep(self._delay(attempt))
                attempt += 1
                self.retries_taken += 1
                continue
            if resp.status != 200:
                data = resp.read()
                conn.close()
                if resp.status in _RETRY_STATUS and attempt < self.retries:
                    self._sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise error_from_response(resp.status, data, what=what)
            return EventStream(conn, resp, self._stream_ended)

    # -- downloads --------------------------------------------------------

    def download(
        self,
        path: str,
        *,
        expected_bytes: Optional[int] = None,
        what: str = "",
        chunk_size: int = 1 << 20,
        on_bytes: Optional[Callable[[int], None]] = None,
    ) -> bytes:
        """GETs a binary body, resuming with ``Range: bytes=N-`` after a dropped
        connection. The total (``Content-Length`` / ``Content-Range``) and the
        ETag must stay the same across parts, and match ``expected_bytes``
        when given; otherwise :class:`~kangaroo.errors.DownloadError`.
        Consecutive failures without progress are bounded by ``retries``."""
        buf = bytearray()
        total: Optional[int] = None
        etag: Optional[str] = None
        failures = 0
        while True:
            extra = {"Accept": "application/octet-stream"}
            if buf:
                extra["Range"] = f"bytes={len(buf)}-"
            received_before = len(buf)
            try:
                conn = self._connection()
                conn.request("GET", self.prefix + path, headers=self._headers(extra))
                resp = conn.getresponse()
                status = resp.status
                headers = {k.lower(): v for k, v in resp.getheaders()}
                if status in (200, 206):
                    start, part_total = self._part_bounds(status, headers, len(buf), path)
                    if start == 0 and buf:
                        buf.clear()  # the server sent the whole file again
                    tag = headers.get("etag")
                    if etag is not None and tag is not None and tag != etag:
                        raise DownloadError(f"{path} changed during the download (ETag {etag} -> {tag})")
                    etag = etag or tag
                    if part_total is not None:
                        if total is not None and part_total != total:
                            raise DownloadError(f"{path} changed size during the download ({total} -> {part_total})")
                        total = part_total
                    while True:
                        piece = resp.read(chunk_size)
                        if not piece:
                            break
                        buf += piece
                        if on_bytes is not None:
                            on_bytes(len(piece))
                    if resp.will_close:
                        self._drop()
                    if total is not None and len(buf) < total:
                        raise http.client.IncompleteRead(bytes(), total - len(buf))
                else:
                    data = resp.read()
                    if resp.will_close:
                        self._drop()
                    if status == 416 and total is not None and len(buf) == total:
                        pass  # everything had arrived before the connection dropped
                    elif status in _RETRY_STATUS and failures < self.retries:
                        failures += 1
                        self._sleep(self._delay(failures))
                        continue
                    else:
                        raise error_from_response(status, data, what=what)
            except (DownloadError, GatewayError):
                raise
            except Exception as e:  # noqa: BLE001 - classified by _retryable
                self._drop()
                if not _retryable(e):
                    raise
                if len(buf) > received_before:
                    failures = 0  # progress was made: the budget is per stall, not per file
                if failures >= self.retries:
                    raise self._unavailable("GET", path, e, failures + 1) from e
                self._sleep(self._delay(failures))
                failures += 1
                self.retries_taken += 1
                continue
            break
        if total is not None and len(buf) != total:
            raise DownloadError(f"{path}: received {len(buf)} bytes, the server announced {total}")
        if expected_bytes is not None and len(buf) != expected_bytes:
            raise DownloadError(f"{path}: received {len(buf)} bytes, the result manifest lists {expected_bytes}")
        return bytes(buf)

    @staticmethod
    def _part_bounds(status: int, headers: Mapping[str, str], have: int, path: str) -> Tuple[int, Optional[int]]:
        """(first byte of this part, total length or None)."""
        if status == 200:
            length = headers.get("content-length")
            return 0, int(length) if length and length.isdigit() else None
        m = _CONTENT_RANGE.match(headers.get("content-range", ""))
        if not m:
            raise DownloadError(f"{path}: 206 answer without a usable Content-Range")
        start = int(m.group(1))
        if start != have:
            raise DownloadError(f"{path}: asked to resume at byte {have}, the server sent from {start}")
        return start, None if m.group(3) == "*" else int(m.group(3))


class EventStream:
    """Iterates ``(event, data)`` pairs of a ``text/event-stream`` body; ``data``
    is the joined ``data:`` lines. Comments and unknown fields are skipped."""

    def __init__(self, conn: http.client.HTTPSConnection, resp: http.client.HTTPResponse,
                 on_end: Optional[Callable[[http.client.HTTPSConnection, bool], None]] = None) -> None:
        self._conn = conn
        self._resp = resp
        self._on_end = on_end
        self._complete = False

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        event, data = "message", []
        while True:
            raw = self._resp.readline()
            if not raw:
                self._complete = True
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "message", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)

    def close(self) -> None:
        """Ends the stream. A consumer that stopped at the last event (the job's
        final state) leaves only the stream's end marker, which the server
        sends at once: it is read with a short timeout so that the connection
        can serve the next stream; otherwise the connection is closed."""
        reusable = False
        if self._on_end is not None and not self._resp.will_close:
            try:
                if not self._complete and self._conn.sock is not None:
                    self._conn.sock.settimeout(0.25)
                    self._resp.read()
                    self._complete = True
                reusable = self._complete and self._resp.isclosed()
            except Exception:  # noqa: BLE001 - any failure just means "do not reuse"
                reusable = False
        if self._on_end is not None:
            self._on_end(self._conn, reusable)
        else:
            self._conn.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
