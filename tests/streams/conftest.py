import sys
from pathlib import Path

# the crash script beside the engine tests, and the worker helpers beside these
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
