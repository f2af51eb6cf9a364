"""The docs site's results page, generated from the benchmark figure files under ``bench/results/``.

Every figure file records the command that made it, the machine it ran on, the date and a few headline
sentences (``bench/_results.save_results`` writes them). A file whose own schema cannot take those fields (a
validated record such as a speedup study's ``study.json``) keeps them in a sidecar ``<stem>.meta.json`` beside
it. This script reads every ``*.json`` under the results folder and writes one Markdown page: per file, its
headline, any tables and images it names, the command as a code block, and the machine and date. A file that
records none of this is an error naming the file and the missing fields, so a figure cannot reach the site
without its provenance.

Optional fields, read from the file or its sidecar: ``title`` (else the file's path), ``tables`` (a list of
``{"title", "columns", "rows"}``), ``images`` (PNG names beside the file) and ``notes`` (sentences after the
tables).

The site's build runs it through ``tools/mkdocs_hooks.py``; by hand::

    python tools/results_page.py --out /tmp/results.md

Example::

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "demo.json").write_text(json.dumps({"command": "python bench/bench_demo.py",
    ...     "machine": {"cpus": 2, "device": "cpu"}, "date": "2026-12-06", "headline": ["It ran."]}))
    >>> entries = collect(root)
    >>> [entry.name for entry in entries]
    ['demo']
    >>> "python bench/bench_demo.py" in render(entries)
    True
    >>> _ = (root / "bare.json").write_text("{}")
    >>> try:
    ...     collect(root)
    ... except ResultsFileError as error:
    ...     print(str(error).replace(str(root), "ROOT")[:55])
    ROOT/bare.json lacks command, machine, date, headline (
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REQUIRED = ("command", "machine", "date", "headline")
SIDECAR = ".meta.json"


class ResultsFileError(ValueError):
    """A figure file (or its sidecar) that cannot be shown: unreadable, or without its provenance."""


@dataclass
class Entry:
    """One figure file as the page shows it."""

    path: Path  # the figure file, relative to the results folder
    name: str  # its path without .json, the default title
    meta: dict[str, Any]
    images: list[Path] = field(default_factory=list)  # absolute paths of the PNGs it names

    @property
    def title(self) -> str:
        return str(self.meta.get("title") or self.name)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; any damage is an error naming the file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsFileError(f"{path}: cannot be read as JSON ({error})") from error
    if not isinstance(document, dict):
        raise ResultsFileError(f"{path}: holds a JSON {type(document).__name__}, not an object")
    return document


def check_meta(path: Path, meta: dict[str, Any], where: Path) -> None:
    """The provenance fields are present and of the right kinds; errors name ``where`` they were read."""
    missing = [name for name in REQUIRED if name not in meta]
    if missing:
        raise ResultsFileError(
            f"{where} lacks {', '.join(missing)} (every figure file records the command, machine, date and "
            f"headline: write it with bench/_results.save_results, or put them in a sidecar "
            f"{path.name[: -len('.json')]}{SIDECAR})"
        )
    if not isinstance(meta["command"], str) or not meta["command"].strip():
        raise ResultsFileError(f"{where}: 'command' must be the command line as a non-empty string")
    if not isinstance(meta["machine"], (str, dict)) or not meta["machine"]:
        raise ResultsFileError(f"{where}: 'machine' must be a description or a dict of what it ran on")
    try:
        _dt.date.fromisoformat(str(meta["date"]))
    except ValueError as error:
        raise ResultsFileError(f"{where}: 'date' {meta['date']!r} is not a YYYY-MM-DD date") from error
    headline = meta["headline"]
    if not isinstance(headline, list) or not all(isinstance(line, str) for line in headline):
        raise ResultsFileError(f"{where}: 'headline' must be a list of sentences")


def load_entry(path: Path, root: Path) -> Entry:
    """The entry of one figure file, its provenance from the file itself or else from its sidecar."""
    sidecar = path.with_name(path.name[: -len(".json")] + SIDECAR)
    where = sidecar if sidecar.exists() else path
    meta = read_json(where)
    if where == path:  # the file's own fields; its figures are not parsed beyond them
        meta = {key: meta[key] for key in meta if key in (*REQUIRED, "title", "tables", "images", "notes")}
    else:
        read_json(path)  # the figure file itself must still be readable
    check_meta(path, meta, where)
    images = [path.parent / name for name in meta.get("images", [])]
    for image in images:
        if not image.is_file():
            raise ResultsFileError(f"{where}: names the image {image.name}, which is not beside it")
    relative = path.relative_to(root)
    return Entry(relative, str(relative.with_suffix("")), meta, images)


def collect(root: Path = RESULTS) -> list[Entry]:
    """Every figure file under ``root`` (sidecars belong to their file), in path order."""
    paths = sorted(p for p in root.rglob("*.json") if not p.name.endswith(SIDECAR))
    orphans = [p for p in root.rglob(f"*{SIDECAR}") if not p.with_name(p.name[: -len(SIDECAR)] + ".json").exists()]
    if orphans:
        raise ResultsFileError(
            f"{orphans[0]}: a sidecar without its figure file {orphans[0].name[: -len(SIDECAR)]}.json"
        )
    return [load_entry(path, root) for path in paths]


def describe_machine(machine: str | dict[str, Any]) -> str:
    """One line for the machine: its description, or what save_results recorded."""
    if isinstance(machine, str):
        return machine
    parts = [str(machine["description"])] if "description" in machine else []
    if "device" in machine:
        parts.append(f"device {machine['device']}")
    if "cpus" in machine:
        parts.append(f"{machine['cpus']} CPU cores")
    if "threads" in machine:
        parts.append(f"torch threads: {machine['threads']}")
    for key, label in (("torch", "torch"), ("python", "Python")):
        if key in machine:
            parts.append(f"{label} {machine[key]}")
    if "load_average" in machine:
        parts.append(f"load average {machine['load_average']}")
    return ", ".join(parts) or json.dumps(machine)


def cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(table: dict[str, Any]) -> list[str]:
    columns = table["columns"]
    lines = [f"**{table['title']}**", ""] if table.get("title") else []
    lines += ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table["rows"]]
    return [*lines, ""]


def render_entry(entry: Entry, image_prefix: str) -> list[str]:
    meta = entry.meta
    lines = [f"## {entry.title}", ""]
    lines += [f"- {sentence}" for sentence in meta["headline"]]
    lines += [""] if meta["headline"] else []
    for table in meta.get("tables", []):
        lines += render_table(table)
    for image in entry.images:
        lines += [f"![{entry.title}]({image_prefix}{(entry.path.parent / image.name).as_posix()})", ""]
    lines += [str(note) for note in meta.get("notes", [])]
    lines += [""] if meta.get("notes") else []
    lines += ["```bash", meta["command"].strip(), "```", ""]
    lines += [
        f"Measured on: {describe_machine(meta['machine'])}; {meta['date']}. "
        f"File: `bench/results/{entry.path.as_posix()}`.",
        "",
    ]
    return lines


def render(entries: list[Entry], image_prefix: str = "results/") -> str:
    """The results page in Markdown; images are linked as ``image_prefix`` + their path under the results."""
    lines = [
        "# Results",
        "",
        "Every figure on this page is read from a file under `bench/results/`, which records the command that "
        "measured it, the machine it ran on and the date (`tools/results_page.py` generates this page from "
        "them when the site is built). Ratios were measured side by side in one run; absolute times depend "
        "on the machine and its load, which each entry names.",
        "",
    ]
    for entry in entries:
        lines += render_entry(entry, image_prefix)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the figure files' folder")
    parser.add_argument("--out", type=Path, help="write the page here (default: stdout)")
    args = parser.parse_args(argv)
    try:
        page = render(collect(args.results))
    except ResultsFileError as error:
        print(f"results_page: {error}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(page)
    else:
        from subclone_viz._atomic import write_file  # the package (and torch) only when writing

        write_file(args.out, page, overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
