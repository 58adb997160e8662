"""Who may call a DA3 web server and which files a request may name.

* **Bind address.** Loopback (``127.0.0.0/8``, ``::1``, ``localhost``) by default; any other address
  needs ``--allow-remote``, and then every request needs the token (``Authorization: Bearer TOKEN``,
  or the ``da3_token`` cookie a browser gets by opening the printed ``/?token=TOKEN`` link once).
* **Host header.** On a loopback bind the ``Host`` header must name a loopback host, so a web page
  cannot reach the server through DNS rebinding.
* **Other sites.** A request that changes state (POST, PUT, DELETE) is refused when its ``Origin``
  is another site's (:func:`cross_site`) and when its body is not ``application/json`` (a
  cross-site page cannot send that without a CORS preflight, which is never answered); a body is
  never read as the next request (:mod:`.http`). See docs/backend-security.md.
* **Windows.** A UNC (``\\\\server\\share``) or device path is refused before the file system is touched
  (:func:`da3_blender.confine.windows_refusal`).
* **Paths.** Every path a request names (images, the export folder) must lie, after resolving
  symbolic links and ``..``, under one of the allowed roots (default: the current folder and the
  gallery folder).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from typing import Iterable

from ..files import confined, windows_refusal
from ..errors import BadInputError

TOKEN_ENV = "DA3_BACKEND_TOKEN"  # the token a server uses (else a random one) and a client sends
COOKIE = "da3_token"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class AccessError(BadInputError):
    """A request that is not allowed (HTTP 401/403)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    """True for a loopback name or address (``127.0.0.1``, ``::1``, ``localhost``)."""
    host = (host or "").strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8008`` -> ``::1``, ``localhost:80`` -> ``localhost``)."""
    header = (header or "").strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def cross_site(origin: str | None, fetch_site: str | None, host: str) -> bool:
    """True when a browser says the request comes from a page of another origin: an ``Origin`` header
    that is not ``http(s)://`` + this request's ``Host`` (``null`` included), or ``Sec-Fetch-Site``
    cross-site / same-site. Programs (no ``Origin``) and this server's own pages pass."""
    if (fetch_site or "").strip().lower() in ("cross-site", "same-site"):
        return True
    if origin is None:
        return False
    scheme, _, netloc = origin.strip().lower().partition("://")
    return scheme not in ("http", "https") or not netloc or netloc.rstrip("/") != (host or "").strip().lower()


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind without ``--allow-remote`` (one line)."""
    if not is_loopback(host) and not allow_remote:
        raise BadInputError(f"--host {host} is not a loopback address: anyone on that network could run jobs; "
                            "add --allow-remote (a token is then required) or bind 127.0.0.1")


def make_token(allow_remote: bool) -> str | None:
    """The bearer token: ``$DA3_BACKEND_TOKEN`` if set, else a random one when remote access is on."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        if len(env) < 16:
            raise BadInputError(f"{TOKEN_ENV} is too short ({len(env)} characters): use at least 16")
        return env
    return secrets.token_urlsafe(32) if allow_remote else None


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def cookie_value(header: str | None, name: str = COOKIE) -> str | None:
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class Roots:
    """The folders requests may read from and write to."""

    def __init__(self, roots: Iterable[str]):
        self.roots = sorted({os.path.realpath(os.path.abspath(os.path.expanduser(r))) for r in roots if r})
        if not self.roots:
            raise BadInputError("no allowed root folder: give --allow-root FOLDER")

    def resolve(self, path: str, what: str) -> str:
        """``path`` (absolute, or relative to the server's folder) resolved, or :class:`AccessError`."""
        if not isinstance(path, str) or not path or "\x00" in path:
            raise BadInputError(f"{what} must be a non-empty path")
        refusal = windows_refusal(path) if os.name == "nt" else None  # before the file system is touched
        if refusal:
            raise AccessError(f"{what} {path} is {refusal}: this server reads only local folders; copy the "
                              "files under an allowed root (--allow-root)")
        real = confined(os.path.expanduser(path), self.roots, windows=False)
        if real is not None:
            return real
        raise AccessError(f"{what} {path} is outside the folders this server may use "
                          f"({', '.join(self.roots)}): start it with --allow-root for that folder")

    def __contains__(self, path: str) -> bool:
        try:
            self.resolve(path, "path")
            return True
        except BadInputError:
            return False
