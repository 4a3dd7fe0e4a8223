"""`pilot analyse` on a generated 10,000,000-row CSV: wall time and peak memory of the process.

Prints one JSON line: rows, seconds, peak_rss_mb. Targets: <= 60 s and <= 300 MB.
Usage: python bench/analyse_csv.py [ROWS]
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    rng = np.random.default_rng(1)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        arm = rng.choice(np.array(["control", "gold", "bonus"]), n)
        history = rng.gamma(2, 30, n).round(2)
        df = pd.DataFrame({"arm": arm, "store": rng.integers(0, 200, n),
                           "segment": rng.choice(np.array(["young_parents", "families", "seniors", "singles"]), n),
                           "history": history, "spend": (0.5 * history + rng.gamma(2, 15, n)).round(2),
                           "visits": rng.poisson(3, n) + 1, "converted": (rng.random(n) < 0.2).astype(int)})
        df.to_csv(path, mode="a", header=start == 0, index=False)


def peak_rss_mb(proc: subprocess.Popen) -> float:
    """The child's high-water mark of resident memory (VmHWM), read until it exits.

    getrusage(RUSAGE_CHILDREN) would also count the parent's pages copied at fork time.
    """
    peak = 0.0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) / 1024)
        except (OSError, IndexError):
            pass
        time.sleep(0.05)
    return peak


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.csv"
        generate(path, rows)
        size_mb = path.stat().st_size / 1e6
        started = time.perf_counter()
        pilot = [sys.executable, "-m", "pilot.cli"]
        proc = subprocess.Popen([*pilot, "analyse", str(path), "--arm", "arm", "--control", "control",
                                 "--metric", "spend", "--metric", "converted:proportion", "--metric",
                                 "spv=spend/visits", "--covariate", "spend=history", "--cluster", "store",
                                 "--segment", "segment", "--sequential", "--format", "json"],
                                stdout=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        peak = peak_rss_mb(proc)
        seconds = time.perf_counter() - started
        if proc.returncode:
            raise SystemExit(f"pilot analyse failed with exit code {proc.returncode}")
    print(json.dumps({"rows": rows, "file_mb": round(size_mb), "seconds": round(seconds, 1),
                      "peak_rss_mb": round(peak, 1)}))


if __name__ == "__main__":
    main()
