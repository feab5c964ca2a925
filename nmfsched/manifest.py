"""Manifests for ``nmfsched factorize --manifest``: inputs with their own rank and options.

A CSV manifest has a header row with a ``path`` column and optional columns named as the
command-line options (``rank``, ``scheduler``, ``lr``, ``batch_size``, ``max_epochs``,
``tol``, ``init``, ``seed``, ``scheduler_params`` as JSON). A TOML manifest has one
``[[input]]`` table per file with the same keys (``scheduler_params`` as a table). Empty
cells fall back to the command line. Relative paths are relative to the manifest's folder.
"""

import csv
import json
import tomllib
from pathlib import Path

from .batch import Task

#: Manifest key -> estimator parameter.
KEYS = {
    "scheduler": "scheduler",
    "scheduler_params": "scheduler_params",
    "lr": "learning_rate",
    "batch_size": "batch_size",
    "max_epochs": "max_epochs",
    "tol": "tol",
    "init": "init",
    "seed": "random_state",
}


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
        for key in ("rank", "batch_size", "max_epochs", "seed"):
            if key in entry and not (key == "batch_size" and entry[key] == "auto"):
                entry[key] = _number(path, entry, key, int)
        for key in ("tol",):
            if key in entry:
                entry[key] = _number(path, entry, key, float)
        if "lr" in entry and entry["lr"] != "auto":
            entry["lr"] = _number(path, entry, "lr", float)
        if "scheduler_params" in entry:
            try:
                entry["scheduler_params"] = json.loads(entry["scheduler_params"])
            except ValueError:
                raise ManifestError(f"{path}: {entry.get('path')}: scheduler_params must be JSON") from None
    if not entries:
        raise ManifestError(f"{path}: no inputs listed")
    return entries


def _number(path, entry, key, kind):
    try:
        return kind(entry[key])
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ManifestError(f"{path}: {entry.get('path')}: {key}={entry[key]!r} is not {what}") from None


def read_manifest(path, *, rank, params):
    """The tasks a manifest lists; ``rank`` and ``params`` are the command line's defaults."""
    path = Path(path)
    tasks = []
    for i, entry in enumerate(_rows(path), start=1):
        where = f"{path}: entry {i}"
        if "path" not in entry:
            raise ManifestError(f"{where}: no 'path'")
        unknown = sorted(set(entry) - set(KEYS) - {"path", "rank"})
        if unknown:
            raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}; known: path, rank, {', '.join(KEYS)}")
        file = Path(entry["path"])
        file = file if file.is_absolute() else path.parent / file
        task_rank = entry.get("rank", rank)
        if task_rank is None:
            raise ManifestError(f"{where} ({entry['path']}): no rank (give --rank or a rank column)")
        if isinstance(task_rank, bool) or not isinstance(task_rank, int) or task_rank < 1:
            raise ManifestError(f"{where}: rank must be an integer >= 1, got {task_rank!r}")
        overrides = {KEYS[k]: v for k, v in entry.items() if k in KEYS}
        tasks.append(Task(file, task_rank, dict(params, **overrides)))
    return tasks
