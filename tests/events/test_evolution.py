"""`backstop schemas check` passes on compatible changes and fails on incompatible ones."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from pipelines.cli import main
from pipelines.events.evolution import check_pair, check_tree
from pipelines.events.schemas import SCHEMAS_DIR, parse


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A throwaway git repo whose HEAD holds a copy of the project's schemas and manifest."""
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, schemas)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "schemas")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "schemas")
    return schemas


def edit(schemas, record, change):
    path = schemas / f"{record}.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2) + "\n")


def test_project_tree_passes(capsys):
    """`backstop schemas check` on the project's own schemas (this is how CI runs it)."""
    report = check_tree(SCHEMAS_DIR)
    assert report.ok, report.problems
    assert main(["schemas", "check"]) == 0, capsys.readouterr().out


def test_unchanged_tree_passes_cli(repo, capsys):
    assert main(["schemas", "check", "--dir", str(repo)]) == 0
    assert "ok" in capsys.readouterr().out


def test_new_field_without_default_fails_backward(repo, capsys):
    edit(repo, "PositionUpdate", lambda s: s["fields"].append(
        {"name": "venue", "type": "string", "doc": "Venue of the position."}))
    main(["schemas", "lock", "--dir", str(repo)])
    assert main(["schemas", "check", "--dir", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "PositionUpdate.avsc" in out and "venue" in out and "FAIL" in out
    # FORWARD does not mind an added field (old readers ignore it)
    assert main(["schemas", "check", "--dir", str(repo), "--mode", "forward"]) == 0


def test_new_field_with_default_passes_full(repo):
    edit(repo, "PositionUpdate", lambda s: s["fields"].append(
        {"name": "venue", "type": "string", "default": "deribit", "doc": "Venue of the position."}))
    main(["schemas", "lock", "--dir", str(repo)])
    assert main(["schemas", "check", "--dir", str(repo), "--mode", "FULL"]) == 0


def test_removed_field_without_default_fails_forward(repo):
    edit(repo, "IndexPrice", lambda s: s.update(fields=[f for f in s["fields"] if f["name"] != "index_name"]))
    main(["schemas", "lock", "--dir", str(repo)])
    assert main(["schemas", "check", "--dir", str(repo)]) == 0  # new reader ignores the old field
    assert main(["schemas", "check", "--dir", str(repo), "--mode", "FORWARD"]) == 1
    assert main(["schemas", "check", "--dir", str(repo), "--mode", "FULL"]) == 1


def test_type_change_fails(repo):
    def to_string(s):
        for f in s["fields"]:
            if f["name"] == "sequence":
                f["type"] = "string"
    edit(repo, "PositionUpdate", to_string)
    main(["schemas", "lock", "--dir", str(repo)])
    assert main(["schemas", "check", "--dir", str(repo)]) == 1


def test_changed_schema_without_lock_and_missing_doc_fail(repo, capsys):
    edit(repo, "IndexPrice", lambda s: s["fields"].append({"name": "x", "type": "long", "default": 0}))
    assert main(["schemas", "check", "--dir", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "has no doc" in out and "schemas lock" in out


def test_new_schema_with_no_previous_version_passes(repo):
    (repo / "Extra.avsc").write_text(json.dumps({
        "type": "record", "name": "Extra", "namespace": "backstop.events", "doc": "x", "backstop.key": "k",
        "fields": [{"name": "k", "type": "string", "doc": "key"},
                   {"name": "event_time_ms", "type": "long", "doc": "t"}]}))
    main(["schemas", "lock", "--dir", str(repo)])
    report = check_tree(repo)
    assert report.ok and report.new == ["Extra"]


def test_transitive_mode_checks_every_manifest_version(repo):
    # v2 adds a defaulted field (fine), v3 drops its default: BACKWARD vs v2 passes only if v2 was committed
    edit(repo, "IndexPrice", lambda s: s["fields"].append(
        {"name": "venue", "type": "string", "default": "d", "doc": "v"}))
    main(["schemas", "lock", "--dir", str(repo)])
    git(repo.parent, "add", "schemas")
    git(repo.parent, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v2")
    edit(repo, "IndexPrice", lambda s: s["fields"][-1].pop("default"))
    main(["schemas", "lock", "--dir", str(repo)])
    assert main(["schemas", "check", "--dir", str(repo)]) == 0  # v2 data always has `venue`
    assert main(["schemas", "check", "--dir", str(repo), "--mode", "BACKWARD_TRANSITIVE"]) == 1  # v1 data does not


def test_no_commits_yet_means_everything_is_new(tmp_path):
    shutil.copytree(SCHEMAS_DIR, tmp_path / "schemas")
    git(tmp_path, "init", "-q")
    report = check_tree(tmp_path / "schemas")
    assert report.ok and len(report.new) == len(report.checked)


def test_not_a_git_repo_is_a_user_error(tmp_path, capsys):
    shutil.copytree(SCHEMAS_DIR, tmp_path / "schemas")
    assert main(["schemas", "check", "--dir", str(tmp_path / "schemas")]) == 2
    assert "not inside a git repository" in capsys.readouterr().err


def test_check_pair_directly():
    old = parse((SCHEMAS_DIR / "IndexPrice.avsc").read_text())
    bad = json.loads(old.text)
    bad["fields"].append({"name": "n", "type": "int", "doc": "n"})
    new = parse(json.dumps(bad))
    assert check_pair(new.avro, old.avro, "BACKWARD")
    assert not check_pair(new.avro, old.avro, "FORWARD")
    assert not check_pair(old.avro, old.avro, "FULL")
