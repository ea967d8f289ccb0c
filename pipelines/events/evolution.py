"""Schema evolution checks with the official avro package's ReaderWriterCompatibilityChecker.

Modes (as in Confluent's registry):

* ``BACKWARD`` (default): the new schema can read data written with the previous one
  (consumers upgrade first -- a rolling deploy of workers reading old data in the topic);
* ``FORWARD``: the previous schema can read data written with the new one (producers first);
* ``FULL``: both;
* ``*_TRANSITIVE``: against every version in the registry manifest, not only the previous commit;
* ``NONE``: no check.

``check_tree`` compares each ``schemas/*.avsc`` of the working tree with the committed version at a
git revision (``git show HEAD:schemas/<file>``); a schema with no committed version passes. It also
reports convention problems (docs, key attribute, event time) and schemas changed without a new
id in the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from pipelines.errors import UserError
from pipelines.events.registry import MANIFEST_NAME, EmbeddedRegistry, read_manifest
from pipelines.events.schemas import SchemaSet

MODES = ("BACKWARD", "FORWARD", "FULL", "BACKWARD_TRANSITIVE", "FORWARD_TRANSITIVE", "FULL_TRANSITIVE", "NONE")


def compatibility_problems(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer`` (empty when it can)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    locations = list(result.locations or [])
    messages = list(result.messages or [])
    return [f"{m} (at {loc})" if loc else str(m) for m, loc in zip(messages, locations + [""] * len(messages))] or [
        "incompatible"]


def check_pair(new: avro.schema.Schema, old: avro.schema.Schema, mode: str = "BACKWARD") -> list[str]:
    """Problems of evolving ``old`` -> ``new`` under ``mode`` (non-transitive part)."""
    mode = mode.upper().removesuffix("_TRANSITIVE")
    if mode not in {"BACKWARD", "FORWARD", "FULL", "NONE"}:
        raise UserError(f"unknown compatibility mode {mode!r}; use one of {', '.join(MODES)}")
    problems = []
    if mode in ("BACKWARD", "FULL"):
        problems += [f"new schema cannot read old data: {p}" for p in compatibility_problems(new, old)]
    if mode in ("FORWARD", "FULL"):
        problems += [f"old schema cannot read new data: {p}" for p in compatibility_problems(old, new)]
    return problems


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise UserError("git is not installed; `schemas check` compares against git history") from None


def committed_text(schemas_dir: Path, filename: str, rev: str = "HEAD") -> str | None:
    """The file's text at ``rev``, or None if it has no committed version (or there are no commits)."""
    top = _git(schemas_dir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UserError(f"{schemas_dir} is not inside a git repository: {top.stderr.strip()}")
    if _git(schemas_dir, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        if rev == "HEAD":
            return None  # no commits yet: everything is new
        raise UserError(f"unknown git revision {rev!r}")
    rel = (schemas_dir.resolve() / filename).relative_to(Path(top.stdout.strip()).resolve()).as_posix()
    shown = _git(schemas_dir, "show", f"{rev}:{rel}")
    return shown.stdout if shown.returncode == 0 else None


@dataclasses.dataclass
class Report:
    checked: list[str] = dataclasses.field(default_factory=list)
    new: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_tree(schemas_dir: str | Path, mode: str = "BACKWARD", rev: str = "HEAD",
               require_locked: bool = True) -> Report:
    """Check every schema of ``schemas_dir`` against its version at ``rev`` (and the manifest)."""
    mode = mode.upper()
    if mode not in MODES:
        raise UserError(f"unknown compatibility mode {mode!r}; use one of {', '.join(MODES)}")
    schemas_dir = Path(schemas_dir)
    tree = SchemaSet.load(schemas_dir)
    report = Report()
    report.problems += tree.lint()
    for schema in tree:
        filename = f"{schema.name}.avsc"
        report.checked.append(schema.name)
        if mode == "NONE":
            continue
        old_text = committed_text(schemas_dir, filename, rev)
        if old_text is None:
            report.new.append(schema.name)
        elif old_text != schema.text:
            try:
                old = avro.schema.parse(old_text)
            except Exception as exc:  # noqa: BLE001 - an unparsable old version cannot constrain
                report.problems.append(f"{filename}: committed version at {rev} does not parse ({exc}); not compared")
            else:
                report.problems += [f"{filename} ({mode} vs {rev}): {p}" for p in check_pair(schema.avro, old, mode)]
        if mode.endswith("_TRANSITIVE"):
            for entry in read_manifest(schemas_dir / MANIFEST_NAME):
                if entry.record == schema.fullname and entry.fingerprint != schema.fingerprint:
                    old = avro.schema.parse(json.dumps(entry.schema))
                    against = f"{mode} vs registry id {entry.schema_id}, version {entry.version}"
                    report.problems += [f"{filename} ({against}): {p}" for p in check_pair(schema.avro, old, mode)]
    if require_locked:
        registry = EmbeddedRegistry(tree, schemas_dir / MANIFEST_NAME)
        for name in registry.unlocked():
            report.problems.append(f"{name}.avsc: no id in {MANIFEST_NAME} for this version; "
                                   "run `backstop schemas lock`")
    return report
