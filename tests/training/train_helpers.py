"""Small helpers shared by the training tests (imported by module name; this folder is on sys.path)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TRAQPOINT_SHARED", REPO.parent / "shared")) / "data"  # as in tests/conftest.py
TINY = ["--training_res", "64", "96", "--batch_size", "2", "--workers", "0"]  # CPU-sized runs


def real_photos(n: int) -> list[Path]:
    """Up to ``n`` real photographs from ../shared/data/images (empty when absent)."""
    folder = DATA / "images"
    return sorted(folder.rglob("*.jpg"))[:n] if folder.is_dir() else []


def read_log(path: Path) -> list[dict[str, float]]:
    """Rows of a stage's CSV log as floats."""
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
