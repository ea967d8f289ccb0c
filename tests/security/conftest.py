import sys
from pathlib import Path

# the crash script beside the engine tests, the endpoint helpers beside the ops tests, the
# worker helpers beside the stream tests
for folder in ("engine", "ops", "streams"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
