"""The system programs the tests start themselves, installed before the first test runs.

``python -m pytest`` (the README's test command, and what ``.ci/run`` runs) calls :func:`ensure`
from ``conftest.py``: whatever is missing is installed with apt where the run is root or may use
``sudo`` without a password; elsewhere the run stops at once with the list of packages to install
(and how), instead of failing at the 163rd test. ``EMOTION_TEST_SYSTEM_DEPS=check`` only checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Program:
    """A program a test needs, and the Debian package that brings it."""

    binary: str
    package: str
    why: str

    def found(self) -> bool:
        return shutil.which(self.binary) is not None or any(
            os.access(os.path.join(folder, self.binary), os.X_OK) for folder in ("/usr/sbin", "/usr/bin", "/sbin")
        )


PROGRAMS = (
    Program("redis-server", "redis-server", "shared rate limits, result cache, Celery jobs and Redis fault tests"),
    Program("nginx", "nginx-light", "the bundled nginx configuration in front of two API processes"),
    Program("chromium", "chromium", "the web console tests in a real browser"),
    Program("chromedriver", "chromium-driver", "Selenium's driver for Chromium"),
)
# Not programs, but the console's screenshots need them to show Chinese text.
EXTRA_PACKAGES = ("fonts-wqy-microhei",)


def missing() -> list[Program]:
    return [program for program in PROGRAMS if not program.found()]


def _apt_prefix() -> list[str] | None:
    """How to run apt-get here: directly as root, through password-less sudo, or not at all."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def instructions(programs: list[Program]) -> str:
    packages = " ".join([p.package for p in programs] + list(EXTRA_PACKAGES))
    lines = [f"  {p.binary:<13} (Debian/Ubuntu package {p.package}): {p.why}" for p in programs]
    return (
        "The tests start these programs themselves, and they are not installed:\n"
        + "\n".join(lines)
        + f"\nInstall them as root, then run the tests again:\n  apt-get update && apt-get install -y {packages}\n"
        "(elsewhere, install the same programs with your system's package manager and put them on PATH)."
    )


def ensure() -> None:
    """Install what is missing, or raise SystemExit with the list of what to install."""
    needed = missing()
    if not needed:
        return
    prefix = _apt_prefix()
    if os.environ.get("EMOTION_TEST_SYSTEM_DEPS") == "check" or prefix is None:
        raise SystemExit(instructions(needed))
    packages = [p.package for p in needed] + list(EXTRA_PACKAGES)
    print(f"Installing the system packages the tests start: {' '.join(packages)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*prefix, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], check=True, env=env
    )
    still = missing()
    if still:
        raise SystemExit(instructions(still))
