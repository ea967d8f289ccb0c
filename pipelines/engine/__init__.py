"""The engine: one shard's deterministic state machine (market state, accounts, revaluation,
detectors, policy). Faust workers and the in-process replay both drive it."""
