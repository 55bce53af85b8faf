"""The wheel built from the repository holds every file of its packages (the golden files of the
conformance suite among them) and nothing else, with the entry points the driver and
`pipekit_cycle.load_backend` look up. ``.ci/wheel-check`` goes further: it installs the wheel with
one framework's extra into a fresh environment and runs the suite there."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipekit_cycle", "vardax_jax", "vardax_torch", "conformance")
BUILD_FILES = ("pyproject.toml", "README.md")


def _isolation() -> list[str]:
    """No isolated build environment where this one has the backend pyproject.toml asks
    (setuptools>=68): building one costs ~20 s of installing setuptools again."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".", 1)[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 68 else []


def _package_files() -> set[str]:
    """The files a clone's packages hold: git's list where there is one (a working tree also holds
    caches and other people's scratch files), else every file but the bytecode."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PACKAGES],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return {path.relative_to(ROOT).as_posix() for package in PACKAGES for path in (ROOT / package).rglob("*")
                if path.is_file() and "__pycache__" not in path.parts}
    return {name for name in listed.split("\0") if name and (ROOT / name).is_file()}


def test_the_wheel_holds_every_file_of_its_packages(tmp_path):
    files = _package_files()
    assert "conformance/golden/vardax_jax-float64.npz" in files and "conformance/expected_failures.toml" in files
    # Built from a copy: a build in the checkout would pack whatever an earlier one left in build/.
    source = tmp_path / "source"
    for name in [*files, *BUILD_FILES]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *_isolation(), "-w", str(tmp_path / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("pipekit_cycle-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = {name for name in names if name.split("/", 1)[0].endswith(".dist-info")}
        entry_points = next(archive.read(name).decode() for name in metadata if name.endswith("/entry_points.txt"))
    packed = names - metadata
    assert not files - packed, f"left out of the wheel: {sorted(files - packed)}"
    assert not packed - files, f"in the wheel but not in the repository: {sorted(packed - files)}"
    for group in ("[pipekit_cycle.backends]", "[pipekit_cycle.tasks]"):
        assert group in entry_points
