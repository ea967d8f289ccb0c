"""Compiled (numba) kernels of the risk core. Each module keeps its numpy reference beside it
and its tests hold the two to the same results.

``warm()`` compiles every kernel ahead of the first event: an engine that runs the compiled
kernels calls it when it is built, and ``infra/install`` runs ``python -m pipelines.risk.kernels``
so that the machine code is in numba's cache (``cache=True``, beside the sources) before any
process starts; a warm start then loads it in under a second instead of compiling for tens.

numba's cache judges a kernel's machine code by the timestamp of the kernel's own file only, but
the kernels compile in constants and jitted helpers of the modules they import (``YEAR_DAYS``,
``KIND_CODE``, ``scalar.maximum``...). So the cache is stamped with a digest of every kernel
module and every ``pipelines`` module one imports (``sources_digest``); on import, machine code
cached under another digest is deleted before any kernel can load it (``drop_stale_machine_code``),
and the kernels compile again from the sources as they are."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from numba.core.caching import InTreeCacheLocator, UserProvidedCacheLocator, UserWideCacheLocator

KERNELS = Path(__file__).resolve().parent
PIPELINES = KERNELS.parent.parent
STAMP = "sources.sha256"
_FROM_PIPELINES = re.compile(r"^from (pipelines(?:\.\w+)+) import", re.MULTILINE)


def kernel_sources(kernels: Path = KERNELS, pipelines: Path = PIPELINES) -> list[Path]:
    """The kernel modules in ``kernels`` and the ``pipelines`` modules they import (``from
    pipelines.x import ...`` at the start of a line: the only import form the kernels use), sorted."""
    own = sorted(kernels.glob("*.py"))
    imported: set[Path] = set()
    for path in own:
        for name in _FROM_PIPELINES.findall(path.read_text()):
            module = pipelines.parent.joinpath(*name.split("."))
            imported |= {p for p in (module.with_suffix(".py"), module / "__init__.py") if p.is_file()}
    return sorted(set(own) | imported)


def sources_digest(sources: list[Path]) -> str:
    """sha256 over the names and contents of ``sources``."""
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def drop_stale_machine_code(cache: Path, digest: str) -> bool:
    """Delete the numba cache files (``*.nbi``, ``*.nbc``) in ``cache`` unless its stamp is
    ``digest``, and stamp it; True when files were dropped. Run before any kernel loads: a
    process that compiled before the sources changed writes no new stamp."""
    stamp = cache / STAMP
    if stamp.is_file() and stamp.read_text() == digest:
        return False
    dropped = False
    for path in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
        path.unlink(missing_ok=True)
        dropped = True
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    return dropped


def _cache_dir() -> Path | None:
    """Where numba keeps this package's machine code, by numba's own locators in its order
    (``NUMBA_CACHE_DIR``, beside the sources, the user's cache); None: nowhere writable."""
    for locator in (UserProvidedCacheLocator, InTreeCacheLocator, UserWideCacheLocator):
        found = locator.from_function(kernel_sources, str(KERNELS / "__init__.py"))
        if found is not None:
            return Path(found.get_cache_path())
    return None


@functools.cache
def warm() -> None:
    """Compile (or load from the cache) every kernel, once per process."""
    from pipelines.risk.kernels import planner, revalue, triage

    revalue.warm()
    planner.warm()
    triage.warm()


_cache = _cache_dir()
if _cache is not None:
    drop_stale_machine_code(_cache, sources_digest(kernel_sources()))
