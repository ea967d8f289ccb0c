"""Detection: event-time windows and the breach detectors (pure, deterministic, no I/O)."""
