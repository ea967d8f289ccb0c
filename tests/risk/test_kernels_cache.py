"""The kernels' machine code is dropped when any source compiled into it changes, not only the
kernel's own file (numba's cache checks that one alone)."""

from __future__ import annotations

from pathlib import Path

from pipelines.risk import kernels


def _tree(root: Path, constant: str) -> tuple[Path, Path]:
    kernel_dir = root / "pipelines" / "risk" / "kernels"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.py").write_text("from pipelines.risk.consts import YEAR\nimport math\n")
    (root / "pipelines" / "risk" / "consts.py").write_text(f"YEAR = {constant}\n")
    (root / "pipelines" / "risk" / "unrelated.py").write_text("X = 1\n")
    return kernel_dir, root / "pipelines"


def test_the_sources_are_the_kernels_and_the_pipelines_modules_they_import(tmp_path) -> None:
    kernel_dir, pipelines = _tree(tmp_path, "365.0")
    names = [p.name for p in kernels.kernel_sources(kernel_dir, pipelines)]
    assert names == ["consts.py", "kernel.py"]


def test_the_digest_moves_with_an_imported_constant(tmp_path) -> None:
    before = kernels.sources_digest(kernels.kernel_sources(*_tree(tmp_path / "a", "365.0")))
    after = kernels.sources_digest(kernels.kernel_sources(*_tree(tmp_path / "b", "360.0")))
    same = kernels.sources_digest(kernels.kernel_sources(*_tree(tmp_path / "c", "365.0")))
    assert before != after
    assert before == same


def test_machine_code_of_other_sources_is_dropped_and_the_cache_stamped(tmp_path) -> None:
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    for name in ("pricing.price-140.py311.nbi", "pricing.price-140.py311.1.nbc", "pricing.cpython-311.pyc"):
        (cache / name).write_bytes(b"x")
    (cache / kernels.STAMP).write_text("old")
    assert kernels.drop_stale_machine_code(cache, "new")
    assert sorted(p.name for p in cache.iterdir()) == ["pricing.cpython-311.pyc", kernels.STAMP]
    assert (cache / kernels.STAMP).read_text() == "new"
    (cache / "pricing.price-140.py311.nbi").write_bytes(b"compiled from the new sources")
    assert not kernels.drop_stale_machine_code(cache, "new")
    assert (cache / "pricing.price-140.py311.nbi").exists()


def test_the_real_kernels_are_stamped_with_what_they_compile_in() -> None:
    sources = {p.relative_to(kernels.PIPELINES).as_posix() for p in kernels.kernel_sources()}
    # pricing compiles in black76.YEAR_DAYS and margin.VOL_UP; every kernel, scalar's helpers
    assert {"risk/black76.py", "risk/margin.py", "risk/kernels/scalar.py", "risk/kernels/pricing.py"} <= sources
