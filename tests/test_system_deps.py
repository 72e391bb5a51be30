"""The README's test command installs, or names, the programs the tests start."""

from __future__ import annotations

import pytest

from . import system_deps


def test_a_machine_without_the_programs_is_told_what_to_install(monkeypatch):
    monkeypatch.setattr(system_deps.Program, "found", lambda self: self.binary != "nginx")
    monkeypatch.setenv("EMOTION_TEST_SYSTEM_DEPS", "check")
    with pytest.raises(SystemExit) as stop:
        system_deps.ensure()
    message = str(stop.value)
    assert "nginx-light" in message and "apt-get install -y nginx-light" in message
    assert "redis-server" not in message.split("Install them")[0]  # only what is missing is listed


def test_a_machine_without_apt_or_root_is_not_touched(monkeypatch):
    monkeypatch.setattr(system_deps.Program, "found", lambda self: self.binary != "chromedriver")
    monkeypatch.setattr(system_deps, "_apt_prefix", lambda: None)
    monkeypatch.delenv("EMOTION_TEST_SYSTEM_DEPS", raising=False)
    monkeypatch.setattr(system_deps.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    with pytest.raises(SystemExit, match="chromium-driver"):
        system_deps.ensure()


def test_every_program_the_tests_start_is_here():
    assert all(program.found() for program in system_deps.PROGRAMS), system_deps.instructions(system_deps.missing())
