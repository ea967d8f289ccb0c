"""Stream workers: the faust-streaming shell around the engine."""
