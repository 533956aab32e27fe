"""Saved connection profiles (`openmaas login`), so later commands need no --url or --key, and
where a command goes without any: the server this machine's settings describe.

The file is mode 0600: it holds keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from openmaas.cli.output import fail
from openmaas.config import Settings


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str | None


def load_profiles(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        fail(f"{path} is not a profiles file ({exc}): fix it, or delete it and run `openmaas login` again.")
    return data if isinstance(data, dict) else {}


def check_url(url: str, source: str) -> str:
    """`url` if it is a server's URL; else the command ends, naming where it came from."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = httpx.URL("")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        fail(f"{source} {url!r} is not a server URL: give one such as http://127.0.0.1:8000")
    return url


def save_profile(path: Path, name: str, url: str, api_key: str) -> None:
    profiles = load_profiles(path)
    profiles[name] = {"url": url.rstrip("/"), "api_key": api_key}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(profiles, handle, indent=2)
    os.replace(tmp, path)


def local_server_url(settings: Settings) -> str:
    """Where `openmaas serve` listens with these settings (`OPENMAAS_HOST`, `OPENMAAS_PORT`); a server
    bound to every address is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{settings.port}"


def resolve(settings: Settings, url: str | None, key: str | None, *, operator: bool = False) -> Connection:
    """Flags first, then `OPENMAAS_URL`/`OPENMAAS_API_KEY`, then the profile, then the local server.

    Operator commands on the server's own machine fall back to `$OPENMAAS_HOME/admin.key`.
    """
    profile = load_profiles(settings.profiles_path).get(settings.profile, {})
    if url:
        resolved_url = check_url(url, "--url")
    elif settings.url:
        resolved_url = check_url(settings.url, "OPENMAAS_URL")
    elif profile.get("url"):
        resolved_url = check_url(profile["url"], f"The URL of profile {settings.profile!r}")
    else:
        resolved_url = local_server_url(settings)
    resolved_key = key or settings.api_key or profile.get("api_key")
    if operator and key is None and settings.api_key is None and settings.admin_key_path.exists():
        resolved_key = settings.admin_key_path.read_text().strip()
    return Connection(resolved_url, resolved_key)
