"""The local stack's servers as processes of their own: ports, start and stop, and what a
process costs (resident memory, CPU time) read from /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the server sets, so a socket in TIME_WAIT does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(
    port: int,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Return once something accepts connections on host:port; fail sooner if `process`, the
    one that should listen there, has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"the server for {host}:{port} exited with {process.returncode}"
                ) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answered(
    url: str,
    process: subprocess.Popen[Any] | None = None,
    timeout_s: float = 120.0,
    name: str = "the server",
) -> None:
    """Return once `url` answers 200; RuntimeError sooner if `process`, the one that should
    answer, has exited, or once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer {url} within {timeout_s:g} s")


@contextmanager
def server_process(
    command: Sequence[str],
    *,
    ready_url: str,
    name: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    startup_s: float = 120.0,
    stop_s: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` in a process of its own for the block's duration, yielded once `ready_url`
    answers 200. Its output is discarded (the cost of writing it stays, the lines do not); its
    errors are kept to say why it failed to start. Stopped with SIGINT, as Ctrl-C stops it,
    then SIGTERM and SIGKILL if it has not exited within `stop_s`."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            try:
                wait_until_answered(ready_url, process, startup_s, name)
            except RuntimeError as exc:
                errors.seek(0)
                tail = errors.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{exc}\n{tail}") from exc
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=stop_s)
                except subprocess.TimeoutExpired:
                    stop_process(process)


def exit_with_parent(parent: int) -> None:
    """End this process when `parent`, the process that started it, is gone, however that
    ended (a SIGKILL leaves no chance to stop children)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: state, parent id, ... (Linux)."""
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_s(pid: int) -> float:
    """User plus system CPU time a live process has used so far, in seconds (Linux)."""
    fields = _stat(pid)
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def is_running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie has)."""
    try:
        return _stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    """The process ids whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(_stat(int(stat.parent.name))[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found
