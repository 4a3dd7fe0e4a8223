"""Pilot's facts for a very large Spark run, as Parquet files in a folder the cluster reads.

A run sends Pilot's own rows (assignments, customers, enrolments) to Spark. Small ones travel with
the session (a DataFrame built from Arrow); past PILOT_SPARK_FACTS_MIN_ROWS rows, and when
PILOT_SPARK_FACTS names a folder both Pilot and the cluster can reach (a shared path, or an `s3://`,
`gs://`, `hdfs://` URI that pyarrow can write), Pilot writes them there as Parquet instead, Spark
reads them from there, and the run's folder is removed when the run ends. That keeps tens of
millions of rows out of the driver's memory and out of Spark Connect's gRPC messages.
"""
from __future__ import annotations

import uuid
from typing import Any

from pilot.errors import Unavailable


class FactsFolder:
    """One run's folder of fact files under `root`: `pilot-facts-<random>/<name>.parquet`."""

    def __init__(self, root: str, min_rows: int) -> None:
        import pyarrow.fs as pafs
        try:
            self.fs, base = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), root)
        except Exception as exc:  # an unknown scheme, missing credentials…
            raise Unavailable(f"PILOT_SPARK_FACTS={root!r} cannot be written: {exc}",
                              code="spark_unavailable") from None
        self.root = root.rstrip("/")
        self.folder = f"pilot-facts-{uuid.uuid4().hex[:12]}"
        self.base = f"{base.rstrip('/')}/{self.folder}"
        self.min_rows = min_rows
        self.written: list[str] = []

    def wants(self, rows: int) -> bool:
        return rows >= self.min_rows

    def write(self, name: str, table: Any) -> str:
        """Write one Arrow table; returns the location Spark reads it from."""
        import pyarrow.parquet as pq
        try:
            self.fs.create_dir(self.base, recursive=True)
            pq.write_table(table, f"{self.base}/{name}.parquet", filesystem=self.fs)
        except Exception as exc:
            raise Unavailable(f"Pilot could not write its {name} to {self.root}: {exc}",
                              code="spark_unavailable") from None
        self.written.append(name)
        return f"{self.root}/{self.folder}/{name}.parquet"

    def remove(self) -> None:
        """The run's folder goes (the files were the run's only)."""
        if self.written:
            try:
                self.fs.delete_dir(self.base)
            except Exception:  # already gone: nothing to tidy
                pass


def facts_folder(config: Any) -> FactsFolder | None:
    """The configured folder for this run, or None (facts travel with the session)."""
    root = config.get("SPARK_FACTS")
    return FactsFolder(root, int(config.get("SPARK_FACTS_MIN_ROWS") or 0)) if root else None
