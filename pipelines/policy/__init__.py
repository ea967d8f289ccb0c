"""Action policy: turns breaches and exposures into actions (pure, deterministic, no I/O)."""
