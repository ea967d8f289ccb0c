"""Named crash scenarios from seeded stochastic models (docs/scenarios.md)."""
