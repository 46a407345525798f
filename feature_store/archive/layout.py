"""Where archived files live, how they are named, and atomic Parquet writes.

Shared by the archiver (writer) and the export (reader). Readers select files by listing the
``date=`` folders in Python instead of relying on Hive partition columns, so an Avro field
named ``date`` or ``source`` can never clash with a partition column.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DAY_MS = 86_400_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_MIN_DAY = dt.date.min.toordinal() - _EPOCH_ORDINAL
_MAX_DAY = dt.date.max.toordinal() - _EPOCH_ORDINAL
_PART = re.compile(r"^part-(\d+)-(\d+)-(\d+)\.parquet$")
DEAD_LETTERS = "dead_letters"


def day_of(ms: int) -> int:
    """Days since 1970-01-01 (UTC) of an epoch-ms time, floored (also for negative times)."""
    return ms // DAY_MS


def date_text(day: int) -> str | None:
    """``YYYY-MM-DD`` of a day number, or None when it is outside the years 1..9999."""
    if not _MIN_DAY <= day <= _MAX_DAY:
        return None
    return dt.date.fromordinal(day + _EPOCH_ORDINAL).isoformat()


def parse_date(text: str) -> int | None:
    try:
        return dt.date.fromisoformat(text).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None


def source_dir(root: Path, source: str) -> Path:
    return root / f"source={source}"


def dead_letter_dir(root: Path, source: str) -> Path:
    return root / DEAD_LETTERS / f"source={source}"


def part_name(partition: int, first_offset: int, last_offset: int) -> str:
    return f"part-{partition}-{first_offset}-{last_offset}.parquet"


def file_path(base: Path, date: str, partition: int, first_offset: int, last_offset: int) -> Path:
    return base / f"date={date}" / part_name(partition, first_offset, last_offset)


def write_atomic(table: pa.Table, path: Path, *, compression: str = "zstd") -> None:
    """Write ``table`` to ``path`` so readers see either no file or the whole file.

    The data goes to a hidden temporary file in the same folder, is fsynced, then renamed over
    ``path`` (``os.replace`` is atomic on POSIX); the folder is fsynced so the rename survives a
    crash before the caller commits Kafka offsets.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp, compression=compression)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def list_files(base: Path, min_day: int | None = None, max_day: int | None = None) -> list[Path]:
    """Archived Parquet files below ``base`` (a source or dead-letter folder) whose ``date=`` folder
    lies in ``[min_day, max_day]`` (day numbers, bounds optional), sorted by path."""
    if not base.is_dir():
        return []
    files: list[Path] = []
    for folder in sorted(base.iterdir()):
        name = folder.name
        if not folder.is_dir() or not name.startswith("date="):
            continue
        day = parse_date(name.removeprefix("date="))
        if day is None:
            continue
        if (min_day is not None and day < min_day) or (max_day is not None and day > max_day):
            continue
        files.extend(sorted(p for p in folder.iterdir() if _PART.match(p.name)))
    return files
