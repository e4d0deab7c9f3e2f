"""Run a real ``mitmdump`` process for end-to-end tests and benchmarks.

Typical use from a pytest fixture::

    with MitmdumpProcess(["addon/main.py"], origin=(http_port, https_port), workdir=tmp_path,
                         options={"captcha_sidecar": str(tmp_path / "events.jsonl")}) as proxy:
        device = Device("127.0.0.2", proxy.proxy_url, proxy.ca_path)
        ...

``tests/kit/redirect.py`` is always loaded after the given scripts (unless ``redirect=False``), so every
upstream connection goes to the loopback test origin while clients keep using real host names.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REDIRECT_SCRIPT = Path(__file__).resolve().with_name("redirect.py")
MITMDUMP = Path(sys.executable).parent / "mitmdump"
CA_FILE = "mitmproxy-ca-cert.pem"

OptionValue = str | int | float | bool | Sequence[str]

# Variables that would make the proxy (or an addon's own HTTP client) talk to something else than loopback.
_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ws_proxy", "wss_proxy")


class MitmdumpError(RuntimeError):
    """mitmdump did not start (the message carries the end of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (callers must cope with losing the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def format_origin(origin: str | tuple[int, int] | tuple[str, int, int]) -> str:
    """``(http_port, https_port)`` or ``(host, http_port, https_port)`` -> ``"HOST:HTTP,HTTPS"``."""
    if isinstance(origin, str):
        return origin
    if len(origin) == 2:
        return f"127.0.0.1:{origin[0]},{origin[1]}"
    return f"{origin[0]}:{origin[1]},{origin[2]}"


def _set_args(options: Mapping[str, OptionValue]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        values: Sequence[object]
        if isinstance(value, bool):
            values = ["true" if value else "false"]
        elif isinstance(value, (str, int, float)):
            values = [value]
        else:
            values = list(value)  # a sequence option: one --set per item
        for v in values:
            args += ["--set", f"{name}={v}"]
    return args


class MitmdumpProcess:
    """A ``mitmdump`` child process listening on ``127.0.0.1:<free port>``.

    - ``scripts``: paths for ``-s`` (relative to ``cwd``, the project root by default); ``redirect.py`` is
      appended unless ``redirect=False``.
    - ``origin``: the test origin for ``testkit_origin``: ``"127.0.0.1:HTTP,HTTPS"`` or ``(HTTP, HTTPS)``.
    - ``options``: extra ``--set name=value`` (bools become ``true``/``false``, sequences one ``--set`` each).
      mitmproxy silently accepts options nobody declared, so assert on behaviour, not on the command line.
    - ``workdir``: holds ``confdir/`` (a fresh CA) and ``mitmdump.log``; a temporary directory (removed by
      ``stop()``) when not given.
    - ``env``: extra environment variables; ``*_proxy`` variables are always removed from the child's environment.

    ``start()`` blocks until the proxy listens and its CA file exists (``startup_timeout``), retrying with a new
    port when the chosen one was taken meanwhile. ``stop()`` sends SIGINT (mitmproxy runs the ``done`` hooks),
    then SIGTERM, then SIGKILL.
    """

    def __init__(
        self,
        scripts: Sequence[str | Path] = (),
        *,
        origin: str | tuple[int, int] | tuple[str, int, int] | None = None,
        options: Mapping[str, OptionValue] | None = None,
        workdir: str | Path | None = None,
        cwd: str | Path = PROJECT_ROOT,
        redirect: bool = True,
        startup_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.scripts = [Path(s) for s in scripts]
        if redirect:
            self.scripts.append(REDIRECT_SCRIPT)
        self.origin = format_origin(origin) if origin is not None else None
        self.options: dict[str, OptionValue] = dict(options or {})
        self.cwd = Path(cwd)
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.extra_args = list(extra_args)
        self.listen_host = listen_host
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mitmdump-"))
        self.confdir = self.workdir / "confdir"
        self.log_path = self.workdir / "mitmdump.log"
        self.port = 0
        self.startup_seconds: float | None = None
        """Wall time of the successful ``start()`` (process spawn to proxy listening), in seconds."""
        self.attempts = 0
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_cache: str | None = None

    # -- properties -------------------------------------------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The mitmproxy CA certificate (PEM) that clients must trust."""
        return self.confdir / CA_FILE

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("mitmdump is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line ``start()`` runs (with the current ``port``)."""
        args = [str(MITMDUMP), "--listen-host", self.listen_host, "-p", str(self.port)]
        for script in self.scripts:
            args += ["-s", str(script)]
        base: dict[str, OptionValue] = {"confdir": str(self.confdir), "ssl_insecure": True}
        if self.origin is not None:
            base["testkit_origin"] = self.origin
        base.update(self.options)
        return args + _set_args(base) + self.extra_args

    # -- logs -------------------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything mitmdump wrote to stdout and stderr so far."""
        if self._log_cache is not None:
            return self._log_cache
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 5.0, start: int = 0) -> str:
        """Wait until ``text`` appears in the log after character ``start``; returns the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log[start:]:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in mitmdump log after {timeout}s:\n{log[-3000:]}")
            time.sleep(0.02)

    # -- life cycle -------------------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self) -> Self:
        if self.running:
            raise RuntimeError("mitmdump is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.confdir.mkdir(parents=True, exist_ok=True)
        self._log_cache = None
        last_error = ""
        for attempt in range(1, 6):
            self.attempts = attempt
            self.port = free_port(self.listen_host)
            t0 = time.monotonic()
            ok, last_error = self._spawn_and_wait()
            if ok:
                self.startup_seconds = time.monotonic() - t0
                return self
            if "failed to listen" not in last_error and "address already in use" not in last_error.lower():
                break  # not a port race: retrying will not help
        raise MitmdumpError(f"mitmdump did not start: {last_error}")

    def _spawn_and_wait(self) -> tuple[bool, str]:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in _close_log)
        shown = [re.sub(r"^((?:\w*key|\w*token)=).+$", r"\1***", arg) for arg in self.command()]
        shown = [re.sub(r"^(captcha_redis=[a-z]+://[^:@/]*:)[^@]*@", r"\1***@", arg) for arg in shown]
        self._log_file.write(f"--- testkit: {' '.join(shown)}\n".encode())
        self._log_file.flush()
        log_start = self._log_file.tell()
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test's terminal must not reach it twice
        )
        # mitmproxy logs "HTTP(S) proxy listening at HOST:PORT." once its socket listens. Waiting for that line
        # rather than probing the port means neither a phantom client (client_connected without a flow) in the
        # addon's view nor being fooled by whoever else holds the port when we lose the race for it.
        listening = f"listening at {self.listen_host}:{self.port}."
        deadline = time.monotonic() + self.startup_timeout
        while True:
            log = self._log_since(log_start)
            if listening in log and self.ca_path.exists():
                return True, ""
            if self._proc.poll() is not None:
                self._proc.wait()
                self.returncode = self._proc.returncode
                self._proc = None
                self._close_log()
                return False, f"exit code {self.returncode}; log:\n{self._log_since(log_start)[-3000:]}"
            if time.monotonic() > deadline:
                self._terminate(grace=2.0)
                return False, f"not ready after {self.startup_timeout}s; log:\n{self._log_since(log_start)[-3000:]}"
            time.sleep(0.01)

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _terminate(self, grace: float) -> int | None:
        proc = self._proc
        if proc is None:
            return self.returncode
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
        self.returncode = proc.wait()
        self._proc = None
        self._close_log()
        return self.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop mitmdump cleanly (SIGINT, so ``done`` hooks run); escalate after ``timeout`` seconds.

        Returns the exit code (0 after a clean shutdown; negative for a signal). A temporary workdir is removed,
        after its log has been read into memory for ``log_text()``.
        """
        code = self._terminate(grace=timeout)
        if self._own_workdir and self.workdir.exists():
            self._log_cache = self.log_text()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
