"""``backstop margin``: through pipelines.cli.main and through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BACKSTOP = Path(sys.executable).parent / "backstop"

MARKET = {"time": "2026-11-23T12:00:00Z", "underlyings": {"BTC": {"index": 60000.0, "vol": 0.55, "rate": 0.0}},
          "instruments": {"BTC-27DEC26-60000-C": {"iv": 0.6}}}
PORTFOLIO = {"account": "acct-1", "collateral_usd": 250000.0,
             "positions": [{"instrument": "BTC-27DEC26-60000-C", "qty": -10.0, "avg_price": 4200.0},
                           {"instrument": "BTC-PERPETUAL", "qty": 3.0, "avg_price": 59000.0}]}


def write(tmp_path: Path, portfolio: object = PORTFOLIO, market: object = MARKET) -> list[str]:
    p, m = tmp_path / "p.json", tmp_path / "m.json"
    p.write_text(portfolio if isinstance(portfolio, str) else json.dumps(portfolio))
    m.write_text(market if isinstance(market, str) else json.dumps(market))
    return ["margin", "--portfolio", str(p), "--market", str(m)]


def test_json_output_has_the_documented_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(write(tmp_path) + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["account"] == "acct-1"
    assert out["maintenance_margin_usd"] > 0 and out["initial_margin_usd"] == pytest.approx(
        out["maintenance_margin_usd"] / 0.8)
    assert out["margin_ratio"] == pytest.approx(out["maintenance_margin_usd"] / out["equity_usd"])
    assert set(out["greeks"]["BTC"]) >= {"delta", "gamma", "vega", "theta"}
    by_name = {p["instrument"]: p for p in out["positions"]}
    assert by_name["BTC-PERPETUAL"]["mark"] == 60000.0 and by_name["BTC-PERPETUAL"]["delta"] == 3.0
    call = by_name["BTC-27DEC26-60000-C"]
    assert call["qty"] == -10.0 and call["delta"] < 0 and call["gamma"] < 0 and call["iv"] == 0.6
    assert out["equity_usd"] == pytest.approx(250000 - 10 * (call["mark"] - 4200) + 3 * 1000)
    assert set(out["worst_scenario"]) >= {"move", "vol_shock", "pnl_usd"}


def test_avg_price_defaults_to_mark_and_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pf = {"account": "a", "collateral_usd": 1000.0, "positions": [{"instrument": "BTC-PERPETUAL", "qty": 0.1}]}
    assert main(write(tmp_path, pf) + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["equity_usd"] == 1000.0
    assert main(write(tmp_path, pf)) == 0
    text = capsys.readouterr().out
    assert "maintenance margin" in text and "BTC-PERPETUAL" in text


def test_adaptive_and_liquidation_plan_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(write(tmp_path) + ["--json"]) == 0
    base = json.loads(capsys.readouterr().out)["maintenance_margin_usd"]
    assert main(write(tmp_path) + ["--json", "--adaptive", "--realised-vol", "BTC=1.2", "--depth", "BTC=1e5",
                                   "--liquidate-to", "0.1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["maintenance_margin_usd"] > base
    assert out["liquidation_plan"]["orders"]


BAD = [
    ("{not json", MARKET, "malformed JSON"),
    (PORTFOLIO, "[1,", "malformed JSON"),
    ({**PORTFOLIO, "positions": [{"instrument": "BTC-27DEC26-60000-Q", "qty": 1}]}, MARKET, "positions[0].instrument"),
    ({**PORTFOLIO, "positions": [{"instrument": "BTC-27DEC25-60000-C", "qty": 1}]}, MARKET, "expired"),
    ({**PORTFOLIO, "positions": [{"qty": 1}]}, MARKET, "positions[0].instrument: missing"),
    ('{"account": "a", "collateral_usd": NaN, "positions": []}', MARKET, "collateral_usd"),
    ({**PORTFOLIO, "positions": [{"instrument": "BTC-PERPETUAL", "qty": "3"}]}, MARKET, "positions[0].qty"),
    ({k: v for k, v in PORTFOLIO.items() if k != "collateral_usd"}, MARKET, "collateral_usd: missing"),
    (PORTFOLIO, {**MARKET, "underlyings": {"BTC": {"index": -1.0, "vol": 0.5}}}, "underlyings.BTC.index"),
    (PORTFOLIO, {**MARKET, "underlyings": {"BTC": {"index": 6e4, "vol": 0}}}, "underlyings.BTC.vol"),
    (PORTFOLIO, {**MARKET, "underlyings": {"ETH": {"index": 2e3, "vol": 0.5}}}, "underlyings.BTC missing"),
    (PORTFOLIO, {**MARKET, "time": "23/11/2026"}, "time"),
    (PORTFOLIO, {"underlyings": MARKET["underlyings"]}, "time: missing"),
    (PORTFOLIO, {**MARKET, "instruments": {"BTC-27DEC26-60000-C": {"iv": -0.2}}}, "instruments.BTC-27DEC26-60000-C.iv"),
]


@pytest.mark.parametrize(("portfolio", "market", "needle"), BAD)
def test_bad_input_is_one_line_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                portfolio: object, market: object, needle: str) -> None:
    assert main(write(tmp_path, portfolio, market)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("backstop: error:") and needle in err and "\n" not in err


def test_console_script_on_the_examples() -> None:
    cmd = [str(BACKSTOP), "margin", "--portfolio", str(EXAMPLES / "portfolio.json"),
           "--market", str(EXAMPLES / "market.json"), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["account"] == "acct-1" and 0 < out["margin_ratio"] < 1


def test_console_script_bad_input_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([str(BACKSTOP), *write(tmp_path, "{oops")], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_vol_labels_follow_the_margin_codes() -> None:
    from pipelines.risk.margin import VOL_DOWN, VOL_NONE, VOL_UP
    from pipelines.risk.whatif import VOL_LABEL

    assert VOL_LABEL == {VOL_UP: "up", VOL_DOWN: "down", VOL_NONE: "unchanged"}
