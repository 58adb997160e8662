"""The request handler base of the DA3 web servers (``http.server``, standard library only).

Every answer is JSON or a file; every error is one JSON line ``{"success": false, "detail": "...",
"kind": "..."}`` (``detail`` as FastAPI writes it, so official clients read it) and the server goes
on serving. Bodies are read only up to ``max_body`` bytes: a larger ``Content-Length`` is refused
before anything is read, a chunked body is refused as soon as it passes the limit.

A request's body is never read as the next request: an answer given before the whole body was read
(a refusal, a route that takes no body) closes the connection (``Connection: close``, then what the
client still sends is read and dropped for a moment so it gets the answer). ``Content-Length`` must
be ASCII digits, chunk sizes hex digits; anything else is a 400 and the connection closes. A request
that changes state (POST, PUT, DELETE) is refused when a browser says it comes from another site
(``Origin`` not this server's, ``Sec-Fetch-Site`` cross-site) or when its body is not
``application/json`` (see docs/backend-security.md).
"""

from __future__ import annotations

import errno
import json
import logging
import mimetypes
import os
import re
import shutil
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from ..errors import DA3Error
from .security import (COOKIE, AccessError, bearer, cookie_value, cross_site, host_of, is_loopback,
                       token_matches)

log = logging.getLogger("da3_blender.web")

DEFAULT_MAX_BODY = 4 << 20  # bytes of a request body (4 MiB: thousands of camera matrices)
DRAIN_SECONDS = 1.0  # after refusing a body, read (and drop) what the client still sends for this long,
DRAIN_BYTES = 1 << 20  # and at most this much
STATE_CHANGING = ("POST", "PUT", "DELETE")
_DIGITS = re.compile(r"[0-9]{1,18}")  # a Content-Length (ASCII digits only: "²".isdigit() is True)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")  # a chunk size (int(x, 16) takes "-1", "0x10", "1_0")
CONTENT_TYPES = {".glb": "model/gltf-binary", ".js": "text/javascript", ".mjs": "text/javascript",
                 ".json": "application/json", ".html": "text/html; charset=utf-8", ".ply": "application/octet-stream",
                 ".npz": "application/octet-stream", ".txt": "text/plain; charset=utf-8"}


class HttpError(Exception):
    def __init__(self, status: int, detail: str, kind: str = "bad_input", close: bool = False):
        super().__init__(detail)
        self.status, self.detail, self.kind, self.close = status, " ".join(str(detail).split()), kind, close


class Server(ThreadingHTTPServer):
    """A threading server with the settings its handlers read (token, limits, loopback)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, token: str | None = None, max_body: int = DEFAULT_MAX_BODY):
        self.token = token
        self.max_body = int(max_body)
        self.loopback_bind = is_loopback(address[0])
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, handler)
        except OSError as exc:
            raise bind_error(address[0], address[1], exc) from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def bind_error(host: str, port: int, exc: OSError) -> DA3Error:
    """One line for a server that cannot listen (a port in use, a privileged port, an unknown address)."""
    from ..errors import BadInputError

    if exc.errno == errno.EADDRINUSE:
        return BadInputError(f"port {port} on {host} is already in use (another da3 backend or gallery?): stop "
                             "that one or choose another with --port")
    if exc.errno == errno.EACCES:
        return BadInputError(f"port {port} on {host} needs administrator rights: choose one above 1023 with --port")
    return BadInputError(f"cannot listen on {host} port {port} ({exc.strerror or exc}): check --host and --port")


def check_port_free(host: str, port: int) -> None:
    """:func:`bind_error` now for a server another library binds later (``da3 gradio``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise bind_error(host, port, exc) from None


Route = tuple[str, "re.Pattern[str]", Callable[..., None]]


class Handler(BaseHTTPRequestHandler):
    """Routing, access checks, JSON in and out. Subclasses list ``routes()``."""

    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "da3"
    sys_version = ""
    timeout = 60  # seconds a connection may sit idle (or trickle a request) before it is dropped

    def routes(self) -> list[Route]:
        return []

    # -- dispatch ------------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        started = time.perf_counter()
        self.body_done, self.drained = False, False  # unknown until the framing headers are read
        try:
            self.body_done = self._body_length() == 0
            url = urlsplit(self.path)
            self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if self._check_access(method, url.path):
                return
            if method in STATE_CHANGING:
                self._check_state_change()
            for verb, pattern, fn in self.routes():
                match = pattern.fullmatch(url.path)
                if match and verb == method:
                    fn(*match.groups())
                    break
            else:
                known = any(p.fullmatch(url.path) for _, p, _ in self.routes())
                raise HttpError(405 if known else 404, f"{method} {url.path} is not " + ("allowed" if known else "a route"))
        except HttpError as exc:
            self.send_error_json(exc.status, exc.detail, exc.kind, exc.close)
        except AccessError as exc:
            self.send_error_json(exc.status, str(exc), "bad_input")
        except DA3Error as exc:
            self.send_error_json(400, str(exc), exc.kind)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug: one line, and the server keeps serving
            log.exception("internal error in %s %s", method, self.path)
            self.send_error_json(500, f"internal error ({type(exc).__name__}: {exc})"[:500], "internal")
        finally:
            if not self.body_done:  # answered before the body was read: it must never be read as a request
                self.close_connection = True
                self._flush_and_drain()
        log.debug("%s %s %.3fs", method, self.path, time.perf_counter() - started)

    def _body_length(self) -> int | None:
        """The body's length from the framing headers (None: chunked); HttpError 400/501 for framing a
        server and a proxy could read two ways (bad or repeated Content-Length, both headers)."""
        lengths = self.headers.get_all("Content-Length") or []
        coding = self.headers.get_all("Transfer-Encoding") or []
        if coding:
            if lengths:
                raise HttpError(400, "a request may not have both Content-Length and Transfer-Encoding", close=True)
            if len(coding) > 1 or coding[0].strip().lower() != "chunked":
                raise HttpError(501, f"Transfer-Encoding {', '.join(coding)!r} is not supported (only chunked)",
                                close=True)
            return None
        if not lengths:
            return 0
        values = {v.strip() for v in lengths}
        if len(values) > 1 or not _DIGITS.fullmatch(next(iter(values))):
            raise HttpError(400, f"bad Content-Length {', '.join(lengths)!r}: one number of ASCII digits", close=True)
        return int(next(iter(values)))

    def _check_state_change(self) -> None:
        """A POST/PUT/DELETE from a web page of another site, or with a body a browser may send cross-site
        without asking (a form's or a no-cors fetch's text/plain): refused."""
        origin, site = self.headers.get("Origin"), self.headers.get("Sec-Fetch-Site")
        if cross_site(origin, site, self.headers.get("Host", "")):
            raise AccessError(f"a web page of another site ({origin or site}) may not use this server: requests "
                              "that change anything are taken from this server's own pages and from programs only")
        if not self.body_done:
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise HttpError(415, f"send the body as Content-Type: application/json (got {ctype or 'none'!r})",
                                close=True)

    def _check_access(self, method: str, path: str) -> bool:
        """Host and token checks; True when the answer (a redirect) was already sent."""
        if self.server.loopback_bind and not is_loopback(host_of(self.headers.get("Host", ""))):
            raise AccessError(f"Host {self.headers.get('Host')!r} is not a loopback name; this server answers "
                              "only requests to 127.0.0.1 / localhost")
        token = self.server.token
        if token is None:
            return False
        if method == "GET" and token_matches(self.query.get("token"), token):  # a browser's first visit
            self.send_response(303)
            self.send_header("Location", path)
            self.send_header("Set-Cookie", f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        given = bearer(self.headers.get("Authorization")) or cookie_value(self.headers.get("Cookie"))
        if not token_matches(given, token):
            raise AccessError("missing or wrong token: send 'Authorization: Bearer TOKEN' (the token the "
                              "server printed at start, or $DA3_BACKEND_TOKEN)", status=401)
        return False

    # -- bodies --------------------------------------------------------------------------------------
    def read_json(self) -> Any:
        """The request body as JSON, within the size limit; HttpError (400/411/413/415) otherwise."""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, f"send the body as Content-Type: application/json (got {ctype or 'none'!r})", close=True)
        length = self._body_length()
        if length is None:
            body = self._read_chunked()
        else:
            if "Content-Length" not in self.headers:
                raise HttpError(411, "the request needs a Content-Length header", close=True)
            if length > self.server.max_body:
                raise self._too_large(f"{length} bytes")
            body = self.rfile.read(length)
            if len(body) < length:
                raise HttpError(400, f"the body ended after {len(body)} of {length} bytes", close=True)
        self.body_done = True
        try:
            return json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise HttpError(400, "the body is not UTF-8 text") from None
        except ValueError as exc:
            raise HttpError(400, f"the body is not valid JSON ({getattr(exc, 'msg', exc)} at line "
                                 f"{getattr(exc, 'lineno', '?')} column {getattr(exc, 'colno', '?')})") from None

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1026)
            size_text = line.split(b";")[0].strip(b" \t\r\n")
            if not line.endswith(b"\n") or not _HEX.fullmatch(size_text):
                raise HttpError(400, f"bad chunk size {size_text[:20]!r} in a chunked body (hex digits)", close=True)
            size = int(size_text, 16)
            if size == 0:
                for _ in range(100):  # trailers, then the empty line
                    if self.rfile.readline(1026) in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
                raise HttpError(400, "too many trailer lines in a chunked body", close=True)
            total += size
            if total > self.server.max_body:
                raise self._too_large(f"more than {self.server.max_body} bytes (chunked)")
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise HttpError(400, "a chunk of the chunked body is cut short or not followed by CRLF", close=True)
            parts.append(data)

    def _too_large(self, what: str) -> HttpError:
        return HttpError(413, f"the request body ({what}) is over this server's limit of {self.server.max_body} bytes "
                              "(--max-body)", close=True)

    # -- answers -------------------------------------------------------------------------------------
    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if not getattr(self, "body_done", True):  # the body stays unread: this answer ends the connection
            self.send_header("Connection", "close")

    def send_json(self, data: Any, status: int = 200) -> None:
        body = (json.dumps(data, allow_nan=False, default=str) + "\n").encode("utf-8")
        self.send_bytes(body, "application/json", status)

    def send_bytes(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error_json(self, status: int, detail: str, kind: str = "bad_input", close: bool = False) -> None:
        if close:
            self.close_connection = True
        try:
            self.send_json({"success": False, "detail": " ".join(str(detail).split()), "kind": kind}, status)
            if close:
                self._flush_and_drain()
        except OSError:
            self.close_connection = True

    def _flush_and_drain(self) -> None:
        if getattr(self, "drained", False):
            return
        self.drained = True
        try:
            self.wfile.flush()
        except OSError:
            return
        self._drain()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line or header, an unknown method): JSON too."""
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.send_error_json(code, message or phrase, "bad_input", close=True)

    def _drain(self) -> None:
        """Read and drop what the client still sends for a moment, so it can read our answer before
        the connection closes (closing with unread data resets it and loses the answer)."""
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + DRAIN_SECONDS, 0
            while time.monotonic() < deadline and drained < DRAIN_BYTES:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                data = sock.recv(1 << 16)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass

    def send_file(self, path: str) -> None:
        if not os.path.isfile(path):
            raise HttpError(404, f"{os.path.basename(path)} not found")
        ext = os.path.splitext(path)[1].lower()
        ctype = CONTENT_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            shutil.copyfileobj(fh, self.wfile, 1 << 20)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        log.info("%s %s", self.address_string(), format % args)


def serve(server: Server, on_stop: Callable[[], None] | None = None) -> int:
    """Serve until Ctrl+C or SIGTERM, then close the socket and call ``on_stop``."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if on_stop is not None:
            on_stop()
    return 0


def route(method: str, pattern: str, fn) -> Route:
    return method, re.compile(pattern), fn
