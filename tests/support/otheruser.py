"""An install of tandem that another user can run, wherever the checkout lives.

Tests that run tandem as the image's user (uid 10001) cannot use the checkout's `.venv`
when the clone sits in a private directory (mode 0700, as `mktemp -d` and many home
directories make). So they get a copy in /tmp: a fresh virtual environment holding the
project's packages and the files of its runtime dependencies (no dev extras), readable
by everyone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("daemon", "reconcilers", "connectors")


def _runtime_closure(name: str) -> set[str]:
    """`name` and every distribution it needs at run time (markers met, no extras)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if current in seen:
            continue
        seen.add(current)
        for text in metadata.requires(current) or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _copy_distribution(name: str, site: Path) -> None:
    dist = metadata.distribution(name)
    for file in dist.files or ():
        source = Path(str(dist.locate_file(file)))
        if not source.is_file() or file.parts[0] in ("..", "bin") or file.suffix == ".pyc":
            continue
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def build(root: Path) -> Path:
    """A virtual environment under `root` with tandem installed; returns its `bin`."""
    venv = root / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name in _runtime_closure("tandem") - {"tandem"}:
        _copy_distribution(name, site)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    script = venv / "bin" / "tandem"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom daemon.cli import main\nsys.exit(main())\n")
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for file in files:
            path = Path(directory) / file
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.parent.name == "bin" else 0o644)
    return venv / "bin"


def reachable_install() -> Iterator[Path]:
    """The generator behind the session fixture `other_user_bin`."""
    root = Path(tempfile.mkdtemp(prefix="tandem-other-user-", dir="/tmp"))
    try:
        yield build(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
