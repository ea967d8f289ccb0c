import sys
from pathlib import Path

# the crash script beside the engine tests, the record samples beside the event tests, and the
# shared strategies beside these
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "events"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
