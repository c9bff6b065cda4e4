"""What a run keeps for its final outputs, in bounded memory: per-frame stats rows and map points.

A live or very long run (``traqpoint-vo --webcam``, ``benchmarks.soak``) must not grow without
bound. :class:`StatsLog` streams the per-frame rows to a temporary CSV file as they come (only
the file position is in memory) and reads them back, typed, when the outputs are written;
:class:`PointStore` keeps at most ``max_points`` triangulated points for ``map.ply``, thinning
the older ones uniformly when full.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def parse_cell(text: str) -> int | float | bool | str:
    """A CSV cell back to the value that was written (``str(x)`` of ints, floats and bools round-trips)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


class StatsLog:
    """Per-frame stats rows (dicts with the same keys), spooled to disk.

    ``append(row)`` writes one CSV line; ``len()``, iteration (typed dicts, in order) and
    ``write_csv(path)`` read the file back. Memory use does not depend on the number of rows.
    """

    def __init__(self) -> None:
        # named, so that readers open their own handle (an own file offset: appends stay at the end)
        self._file = tempfile.NamedTemporaryFile("w", newline="", prefix="traqpoint-stats-", suffix=".csv")
        self._writer: csv.DictWriter | None = None
        self.fields: list[str] = []
        self._count = 0

    def append(self, row: dict) -> None:
        if self._writer is None:
            self.fields = list(row)
            self._writer = csv.DictWriter(self._file, fieldnames=self.fields)
            self._writer.writeheader()
        self._writer.writerow(row)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[dict]:
        self._file.flush()
        with open(self._file.name, newline="") as fh:
            for row in csv.DictReader(fh):
                yield {k: parse_cell(v) for k, v in row.items()}

    def write_csv(self, path: str | Path) -> None:
        """Copy the rows (with their header) to ``path``."""
        self._file.flush()
        shutil.copyfile(self._file.name, path)


class PointStore:
    """World points ``[N, 3]`` added at keyframes, at most ``max_points`` kept (for ``map.ply``).

    When full, every second stored point is dropped (a uniform thinning of the whole map, so the
    cloud keeps its extent); later batches are thinned by the same accumulated stride.
    """

    def __init__(self, max_points: int = 500_000) -> None:
        self.max_points = max_points
        self._chunks: list[np.ndarray] = []
        self._size = 0
        self._stride = 1
        self._phase = 0

    def append(self, points: np.ndarray) -> None:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        keep = points[(self._phase + np.arange(len(points))) % self._stride == 0]
        self._phase = (self._phase + len(points)) % self._stride
        if len(keep):
            self._chunks.append(keep)
            self._size += len(keep)
        while self._size > self.max_points:
            merged = np.concatenate(self._chunks)[::2]
            self._chunks, self._size, self._stride = [merged], len(merged), self._stride * 2

    def __len__(self) -> int:
        return self._size

    def array(self) -> np.ndarray:
        """All kept points ``[N, 3]`` float64."""
        return np.concatenate(self._chunks) if self._chunks else np.zeros((0, 3))
