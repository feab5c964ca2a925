"""Manifests for ``nmfsched factorize --manifest``: inputs with their own rank and options.

A CSV manifest has a header row with a ``path`` column and optional columns: ``rank`` and
the keys of :data:`nmfsched.options.FIT_OPTIONS` (``scheduler``, ``scheduler_params`` as
JSON, ``lr``, ``batch_size``, ``grow_batch``, ``max_iter`` (or the former ``max_epochs``), ``tol``, ``init``,
``backend``, ``seed``). A TOML manifest has one ``[[input]]`` table per file with the same
keys (``scheduler_params`` as a table). Empty cells fall back to the command line.
Relative paths are relative to the manifest's folder.
"""

import csv
from pathlib import Path

import tomllib

from .batch import Task
from .options import BY_KEY


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the entry."""


def _rows(path):
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ManifestError(f"{path}: cannot be read as TOML ({e})") from None
        entries = data.get("input")
        if not isinstance(entries, list) or not entries:
            raise ManifestError(f"{path}: expected one or more [[input]] tables")
        return entries
    if path.suffix.lower() != ".csv":
        raise ManifestError(f"{path}: a manifest must be .csv or .toml")
    try:
        with open(path, newline="") as f:
            entries = [{k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()} for row in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot be read as CSV ({e})") from None
    for entry in entries:
        if "rank" in entry:
            entry["rank"] = _rank(path, entry)
        for key, option in BY_KEY.items():
            if key in entry:
                try:
                    entry[key] = option.parse(entry[key])
                except ValueError as e:
                    raise ManifestError(f"{path}: {entry.get('path')}: {key} {e}") from None
    if not entries:
        raise ManifestError(f"{path}: no inputs listed")
    return entries


def _rank(path, entry):
    try:
        return int(entry["rank"])
    except ValueError:
        raise ManifestError(f"{path}: {entry.get('path')}: rank={entry['rank']!r} is not an integer") from None


def read_manifest(path, *, rank, params):
    """The tasks a manifest lists; ``rank`` and ``params`` are the command line's defaults."""
    path = Path(path)
    tasks = []
    for i, entry in enumerate(_rows(path), start=1):
        where = f"{path}: entry {i}"
        if "path" not in entry:
            raise ManifestError(f"{where}: no 'path'")
        unknown = sorted(set(entry) - set(BY_KEY) - {"path", "rank"})
        if unknown:
            raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}; known: path, rank, {', '.join(BY_KEY)}")
        file = Path(entry["path"])
        file = file if file.is_absolute() else path.parent / file
        task_rank = entry.get("rank", rank)
        if task_rank is None:
            raise ManifestError(f"{where} ({entry['path']}): no rank (give --rank or a rank column)")
        if isinstance(task_rank, bool) or not isinstance(task_rank, int) or task_rank < 1:
            raise ManifestError(f"{where}: rank must be an integer >= 1, got {task_rank!r}")
        overrides = {BY_KEY[k].param: v for k, v in entry.items() if k in BY_KEY}
        tasks.append(Task(file, task_rank, dict(params, **overrides)))
    return tasks
