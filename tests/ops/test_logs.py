"""Structured logs: one JSON object a line, with the ids passed as ``extra``; text stays text."""

from __future__ import annotations

import io
import json
import logging

import pytest

from pipelines.errors import UserError
from pipelines.ops import logs

pytestmark = pytest.mark.ops


def test_json_line_has_the_fields_and_the_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("backstop.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("action %s rejected", "a-1", extra={"action_id": "a-1", "breach_ids": ["b-1", "b-2"],
                                                          "account": "acct-ü", "partition": 3, "offset": 41})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # a traceback stays inside its one line
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "action a-1 rejected" and first["level"] == "WARNING"
    assert first["logger"] == "backstop.test.json"
    assert (first["action_id"], first["breach_ids"], first["account"], first["partition"], first["offset"]) == \
        ("a-1", ["b-1", "b-2"], "acct-ü", 3, 41)
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert "args" not in first and "levelno" not in first  # only what the call added
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_configure_switches_the_root_logger(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    logging.getLogger("backstop.test").info("hello %d", 1, extra={"topic": "t"})
    record = json.loads(capsys.readouterr().err.strip())
    assert (record["msg"], record["topic"]) == ("hello 1", "t")
    logs.configure("text")
    logging.getLogger("backstop.test").info("plain")
    err = capsys.readouterr().err
    assert err.rstrip().endswith("INFO backstop.test plain")
    with pytest.raises(UserError, match="xml"):
        logs.configure("xml")
