"""Checks of the network addresses a config names: exchange and collector URLs, ``admin.listen``.

Each check returns the value or raises ``ValueError`` with an operator's message
(the config loader prefixes the key and its FILE:LINE:COL).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_DOTTED_NUMBERS = re.compile(r"^[0-9.]+$")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP (127.0.0.0/8, ::1): traffic that never leaves the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: str, *, secure: str, plain: str, plain_anywhere: bool = False) -> str:
    """A well-formed absolute URL with scheme ``secure`` (``https``/``wss``), or ``plain`` to a loopback host.

    ``plain_anywhere`` allows the plain scheme to any host (an OTLP collector in the
    cluster is commonly plain http). Spaces, control characters, a query, a
    fragment, a missing host or a bad port are always errors.
    """
    if _SPACE_OR_CONTROL.search(value):
        raise ValueError(f"must not contain spaces or control characters, got {shown(value)}")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ValueError(f"is not a URL: {_lower_first(str(e))}, got {shown(value)}") from None
    scheme = parts.scheme.lower()
    if scheme not in (secure, plain) or not value.lower().startswith(f"{scheme}://"):
        where = "to any host" if plain_anywhere else "only to a loopback host"
        raise ValueError(f"must start with {secure}:// ({plain}:// {where}), got {shown(value)}")
    if not host:
        raise ValueError(f"is not a URL: it has no host, got {shown(value)}")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"must not have a query (?...) or a fragment (#...), got {shown(value)}")
    if scheme == plain and not plain_anywhere and not is_loopback_host(host):
        raise ValueError(f"plain {plain}:// is only allowed to a loopback host (such as the simulator); "
                         f"use {secure}://, got {shown(value)}")
    return value


def check_listen(value: str) -> str:
    """``HOST:PORT`` with a host name, an IPv4 address or a bracketed IPv6 address (``[::1]:9464``)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT with a port from 0 to 65535, got {shown(value)}")
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"{inner!r} is not an IPv6 address, got {shown(value)}") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"an IPv6 address must be written in brackets, e.g. [::1]:9464, got {shown(value)}")
    elif _DOTTED_NUMBERS.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address, got {shown(value)}") from None
    elif not _HOST_NAME.match(host):
        raise ValueError(f"{host!r} is not a host name or an IP address, got {shown(value)}")
    return value


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
