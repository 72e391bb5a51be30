"""The package's layers (ARCHITECTURE.md): every module imports, every import looks down."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import emotion_service

REPO = Path(__file__).resolve().parent.parent


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(emotion_service.__path__, "emotion_service.")]
    assert {"emotion_service.audio.decode", "emotion_service.http.app", "emotion_service.jobs.factory"} <= set(names)
    for name in names:
        importlib.import_module(name)


def test_import_contracts_hold():
    """The contracts in pyproject.toml: layers, Flask only in http/, audio at the bottom, no circles."""
    binary = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([binary], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and result.stdout.count(" KEPT") >= 4, result.stdout
