"""The production server for the HTTP benchmarks: gunicorn as scripts/serve.sh starts it (pilot/server.py)."""
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """gunicorn with pilot/server.py's settings and 2 workers serving `module` (the app of wsgi.py by
    default) on 127.0.0.1:`port`; `args`: more gunicorn options (e.g. `--worker-class sync` to compare)."""

    def __init__(self, url: str, port: int, module: str = "wsgi:app", timeout: int | None = None,
                 env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        env = {**os.environ, "PILOT_DATABASE_URL": url, "PILOT_AUTO_MIGRATE": "0", "PYTHONPATH": str(ROOT), **(env or {})}
        extra = ["--timeout", str(timeout)] if timeout else []
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:pilot.server", "--workers", "2",
                                      *extra, *(args or []), "--bind", f"127.0.0.1:{port}", module], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(150):
            if subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/healthz"], capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit("server did not start")

    def peak_rss_mb(self) -> float:
        """The largest peak resident set (VmHWM) of the gunicorn workers."""
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        peaks = []
        for pid in children:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return round(max(peaks), 1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
