"""Value types for command-line flags, shared by the sub-commands.

Each is an ``argparse`` ``type=``: it returns the parsed value or raises
``argparse.ArgumentTypeError`` with a message naming what is expected, which the parser prints
as one line (``pipelines.cli.Parser``) with exit code 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

#: seeds are the whole numbers numpy's generators take, within the unsigned 32-bit range
MAX_SEED = 2**32 - 1
#: margin-trigger ratios (maintenance margin / equity) above this are a typo, not a policy
MAX_RATIO = 100.0


def _whole_number(text: str, low: int, high: int | None, expected: str) -> int:
    """``text`` as an int in ``[low, high]`` (no upper bound when ``high`` is None), else the
    error ``expected <expected>, got <what was given>``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: a whole number from 0 to ``MAX_SEED``."""
    return _whole_number(text, 0, MAX_SEED, f"a whole number from 0 to {MAX_SEED}")


def ratio(text: str) -> float:
    """A margin ratio: a finite number above 0 and at most ``MAX_RATIO``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio such as 1.1, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_RATIO):
        raise argparse.ArgumentTypeError(f"expected a ratio above 0 and at most {MAX_RATIO:g}, got {text!r}")
    return value


def ratios(text: str) -> list[float]:
    """Comma-separated margin ratios (each as ``ratio``), at least one."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios such as 0.8,1.0,1.2, got {text!r}")
    return [ratio(item) for item in items]


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    return _whole_number(text, 1, None, "a whole number of at least 1")


def positive_float(text: str) -> float:
    """A finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def output_file(text: str) -> str:
    """A file to write, in a folder that exists (commands create no folders on the way)."""
    path = Path(text)
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} of {text} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    return text


def non_negative_int(text: str) -> int:
    """A whole number of at least 0."""
    return _whole_number(text, 0, None, "a whole number of at least 0")


def store_folder(text: str) -> str:
    """An embedded store's folder: one that exists, or a path where none exists yet (not a file)."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not an audit store folder")
    return text
