import sys
from pathlib import Path

# the crash script beside the engine tests, the endpoint helpers beside the ops tests, and the
# worker helpers beside these
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
