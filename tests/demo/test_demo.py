import json
import subprocess
import sys
from pathlib import Path

from pipelines.cli import main

REQUIRED = {"scenario", "events", "breaches", "actions", "executions", "bad_debt_usd", "bad_debt_without_backstop_usd",
            "liquidated_accounts", "audit_rows", "audit_store"}


def test_demo_json_in_a_subprocess_and_timeline(tmp_path):
    exe = Path(sys.executable).with_name("backstop")
    store = tmp_path / "audit"
    done = subprocess.run([str(exe), "demo", "--json", "--store", str(store)], capture_output=True, text=True,
                          timeout=300, check=True)
    summary = json.loads(done.stdout)
    assert REQUIRED <= summary.keys()
    assert summary["liquidated_accounts"] and summary["audit_rows"] > summary["events"]
    assert summary["bad_debt_usd"] < summary["bad_debt_without_backstop_usd"]
    account = summary["liquidated_accounts"][0]
    timeline = subprocess.run([str(exe), "incident", "timeline", "--store", summary["audit_store"],
                               "--account", account, "--json"], capture_output=True, text=True, timeout=300, check=True)
    text = timeline.stdout
    assert account in text and "execution" in text and "action" in text


def test_demo_text_through_main(tmp_path, capsys, monkeypatch):
    # chdb allows one store per process: this test runs the text output in a subprocess-free way only when
    # no other store is open here, so use a fresh interpreter
    code = ("from pipelines.cli import main; import sys; "
            f"sys.exit(main(['demo', '--scenario', 'aug-2024', '--store', {str(tmp_path / 'a')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "backstop incident timeline --store" in done.stdout
    assert main(["scenarios", "list"]) == 0
