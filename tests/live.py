"""A real gunicorn process for tests about HTTP bodies, disconnects, timeouts, memory and logs.

The Werkzeug test client hands a view the whole body it was given and never times out, which hid
data-loss bugs; these tests talk to gunicorn over a socket, configured as scripts/serve.sh runs it
(`-c python:pilot.server`).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """gunicorn serving wsgi:app on a free port of 127.0.0.1 against `database_url`."""

    def __init__(self, database_url: str, tmp_path: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        environ = {**os.environ, "PILOT_DATABASE_URL": database_url, "PILOT_AUTO_MIGRATE": "0",
                   "PILOT_SECRET_KEY": "test-secret", "PILOT_INSTANCE_PATH": str(tmp_path / "instance"),
                   "PYTHONPATH": str(ROOT), "PORT": str(self.port), **(env or {})}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:pilot.server",
                                      *(args or []), "wsgi:app"], cwd=ROOT, env=environ,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()}")
            try:
                if self.request("GET", "/healthz").status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not start: {self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> http.client.HTTPResponse:
        """One request on a connection of its own; the response is read in full (`.data`)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            resp.data = resp.read()
            return resp
        finally:
            conn.close()

    def raw(self, data: bytes, read: bool = True, timeout: float = 30) -> bytes:
        """Send raw bytes on a socket, half-close it, and return what the server answers (if `read`)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            if not read:
                return b""
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def exchange(self, head: bytes, pieces: Iterable[bytes], pause: float = 0.0,
                 timeout: float = 60) -> Answer:
        """Send a head and then the body's pieces (pausing `pause` seconds between them) from a thread of
        its own, half-close, and read the answer meanwhile: a client that stops early, sends slowly, or
        whose body the server refuses before reading it all (a send error then only ends the sending)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        failure: list[BaseException] = []

        def send() -> None:
            try:
                sock.sendall(head)
                for piece in pieces:
                    if pause:
                        time.sleep(pause)
                    sock.sendall(piece)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server answered and closed before taking the whole body
            except BaseException as exc:
                failure.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        chunks = []
        try:
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            sender.join(timeout)
            sock.close()
        if failure:
            raise failure[0]
        return Answer(b"".join(chunks))

    def peak_rss_mb(self) -> float:
        """The largest peak resident set (VmHWM) of the server's workers, in MiB."""
        return max(peak_rss_mb(pid) for pid in self.worker_pids())

    def log_with(self, text: str, timeout: float = 10) -> str:
        """The log once `text` is in it (a worker writes its access line after the answer is sent)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Answer:
    """What a raw exchange got back: the status (None when the server closed without answering), the
    headers (lower-case names) and the body."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}

    def json(self) -> dict:
        return json.loads(self.body)


def request_head(method: str, path: str, headers: dict[str, str], length: int | None = None) -> bytes:
    """A request line and headers; without `length` the body is sent chunked."""
    framing = {"Content-Length": str(length)} if length is not None else {"Transfer-Encoding": "chunked"}
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             *(f"{k}: {v}" for k, v in {**headers, **framing}.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(pieces: Iterable[bytes], last: bool = True) -> Iterator[bytes]:
    """The pieces in chunked framing; `last=False` leaves out the terminating chunk."""
    for piece in pieces:
        if piece:
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
    if last:
        yield b"0\r\n\r\n"


def peak_rss_mb(pid: int) -> float:
    """The peak resident set (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")
