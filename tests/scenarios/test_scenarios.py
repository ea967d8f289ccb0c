import hashlib

from pipelines.cli import main
from pipelines.events.codec import default_codec
from pipelines.events.files import read_replay
from pipelines.scenarios import library
from pipelines.scenarios.generate import generate, write_recording


def test_every_scenario_has_a_population_and_a_crash():
    for scenario in library.SCENARIOS:
        g = generate(scenario)
        kinds = {a.kind for a in g.accounts}
        assert {"long-perp", "short-perp"} <= kinds
        assert any(a.hedged for a in g.accounts)
        first = scenario.underlyings[0].underlying
        index = [v["price"] for _, r, v in g.events if r == "IndexPrice" and v["underlying"] == first]
        move = scenario.underlyings[0].move
        extreme = min(index) / index[0] - 1 if move < 0 else max(index) / index[0] - 1
        assert abs(extreme) >= abs(move) * 0.6, (scenario.name, extreme)
        times = [v["event_time_ms"] for _, _, v in g.events]
        assert times == sorted(times)


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    s = library.get("may-2021")
    a, b, c = tmp_path / "a.avro", tmp_path / "b.avro", tmp_path / "c.avro"
    write_recording(generate(s, 11), a)
    write_recording(generate(s, 11), b)
    write_recording(generate(s, 12), c)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(a) == digest(b) != digest(c)


def test_recording_round_trips_through_the_codec(tmp_path):
    g = generate(library.get("aug-2024"))
    path = tmp_path / "r.avro"
    assert write_recording(g, path) == len(g.events)
    codec = default_codec()
    decoded = [codec.decode(r["value"]).value for r in read_replay(path)]
    assert decoded[0]["event_time_ms"] == g.events[0][2]["event_time_ms"]
    assert len(decoded) == len(g.events)
    withdrawals = [v for v in decoded if v.get("reason") == "withdrawal"]
    assert withdrawals and withdrawals[0]["change"] < 0


def test_scenarios_list(capsys):
    assert main(["scenarios", "list"]) == 0
    out = capsys.readouterr().out
    for name in library.names():
        assert name in out


def test_the_coin_margined_book_posts_btc_and_holds_btc_settled_options():
    from pipelines.engine.engine import Engine
    from pipelines.policy.signing import SigningKey

    g = generate(library.get("deribit-coin-2021"))
    definitions = {v["instrument"]: v for _, r, v in g.events if r == "InstrumentDefinition"}
    assert definitions and all(d["inverse"] and d["settlement_currency"] == "BTC" for d in definitions.values())
    collateral = {v["account"]: v["asset"] for _, r, v in g.events if r == "CollateralUpdate"}
    positions = [v for _, r, v in g.events if r == "PositionUpdate"]
    option_accounts = {p["account"] for p in positions if p["instrument"] in definitions}
    assert option_accounts and all(collateral[a] == "BTC" for a in option_accounts)
    assert all(0 < p["average_price"] < 1 for p in positions if p["instrument"] in definitions)  # premiums in BTC
    engine = Engine(SigningKey("test", b"test-key-000000000000"))
    for _, record, value in g.events:
        if value["event_time_ms"] <= g.t0 + 100:
            engine.on_event(record, value, "test")
    book = engine.revaluation().book
    table = book.instruments
    assert all(table.instruments[i].inverse for i, name in enumerate(table.names) if name in definitions)
    exposures = {e["account"]: e for e in engine.flush().exposures}
    equity = {a: exposures[a]["equity_usd"] for a in option_accounts if a in exposures}
    assert equity and all(e > 0 for e in equity.values())  # calibrated in coin: solvent at the start
