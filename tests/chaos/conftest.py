import sys
from pathlib import Path

# the endpoint helpers beside the ops tests, the incident and samples beside the audit and event
# tests, the chaos harness beside these
for folder in ("ops", "audit", "events", "chaos"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
