"""`heapbot store status|stop`: the embedded redis-server of HEAPBOT_DATA_DIR.

The embedded server outlives the heapbot processes that use it (so every CLI call
does not pay a start and a stop); these commands show it and stop it. Stopping
refuses while another heapbot process uses the server.
"""

from __future__ import annotations

import argparse
import json

from bot.errors import UsageError
from bot.redis_server import EmbeddedRedis
from bot.settings import get_settings


def _embedded() -> EmbeddedRedis:
    settings = get_settings()
    if settings.redis_url:
        raise UsageError("REDIS_URL is set, so heapbot uses that Redis and runs no embedded "
                         "redis-server.", hint="Unset REDIS_URL to manage the embedded one.")
    return EmbeddedRedis(settings.data_dir)


def status(args: argparse.Namespace) -> int:
    """Print whether the embedded server runs, where, its pid and version, and if in use."""
    info = _embedded().status()
    if getattr(args, "format", "text") == "json":
        print(json.dumps(info, sort_keys=True))
        return 0
    if not info["running"]:
        print(f"no embedded redis-server runs for {info['data_dir']}")
        return 0
    users = "in use by a heapbot process" if info.get("in_use") else "not in use"
    print(f"embedded redis-server {info.get('version')} (pid {info.get('pid')}) for "
          f"{info['data_dir']}, up {info.get('uptime_seconds')} s, {users}")
    return 0


def stop(args: argparse.Namespace) -> int:
    """Stop the embedded server (refused while another heapbot process uses it)."""
    embedded = _embedded()
    if embedded.stop(force=bool(getattr(args, "force", False))):
        print(f"stopped the embedded redis-server of {embedded.data_dir}")
    else:
        print(f"no embedded redis-server runs for {embedded.data_dir}")
    return 0
