"""Outbound URLs (webhooks): what may be configured, and how they appear in logs.

A webhook URL is http or https, names a host, carries no credentials (``user:pass@``: use the
HMAC secret), and does not point at a link-local or cloud metadata address (169.254.0.0/16,
fe80::/10, ``metadata.google.internal`` …), where a request from the server could read instance
credentials, unless ``webhook_allow_link_local`` says so. The host's addresses are checked again
when a delivery is made, so a name that resolves there later is refused too.

In logs a URL shows its scheme, host and port only: receivers (Slack, Teams) put their secret in
the path.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.azure.com", "instance-data"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_METADATA_IPS = frozenset({"100.100.100.200", "fd00:ec2::254"})  # Alibaba, AWS IPv6


def check_webhook_url(url: str, allow_link_local: bool = False) -> None:
    """Raise ``ValueError`` naming what is wrong with ``url`` as a webhook target."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
        httpx.URL(url)  # what delivery parses it with: refuse here what it would refuse there
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"{redact_url(url)} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{redact_url(url)}: only http and https webhooks are sent (not {parts.scheme!r})")
    if not parts.hostname:
        raise ValueError(f"{redact_url(url)} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{redact_url(url)} carries credentials in the URL: remove them; receivers check the "
            "Pitstop-Signature header (webhook_secret)"
        )
    if not allow_link_local and is_link_local_host(parts.hostname):
        raise ValueError(
            f"{redact_url(url)} points at a link-local or cloud metadata address; set "
            "webhook_allow_link_local if that is really the receiver"
        )


def is_link_local_host(host: str) -> bool:
    """Whether ``host`` (a name or an address literal) is a metadata name or a link-local address."""
    name = host.strip("[]").lower().rstrip(".")
    if name in _METADATA_HOSTS:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return _link_local(address)


def resolves_link_local(host: str) -> bool:
    """Whether any address ``host`` resolves to now is link-local or metadata (False if it does
    not resolve: the delivery fails and is retried like any unreachable receiver)."""
    if is_link_local_host(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return any(_link_local(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos)


def _link_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in _NAT64 or address in _V4_COMPATIBLE):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # the IPv4 address inside
        if embedded is not None and _link_local(embedded):
            return True
    return address.is_link_local or str(address) in _METADATA_IPS


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: no credentials, path or query (receivers keep secrets there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{rest}"
