import sys
from pathlib import Path

# the worker kit beside these, the crash script beside the engine tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
