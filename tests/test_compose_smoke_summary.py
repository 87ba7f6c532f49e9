"""The compose smoke's summary line: the failed step and its log, never a bare 0/0 (issue #17)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke() -> ModuleType:
    """deploy/compose_smoke.py (a script, not a package), imported from its path."""
    return load_script("compose_smoke", "deploy/compose_smoke.py")


def test_a_full_pass_prints_the_counts_and_no_failed_step(smoke: ModuleType) -> None:
    outcome = smoke.Outcome(healthy=8, checked=8, extraction=True, training=True, flower=True)
    assert outcome.passed()
    assert smoke.result_line(outcome, 449) == (
        "compose_smoke: services_healthy=8/8 extraction=ok training=ok flower=ok seconds=449"
    )


def test_compose_failing_before_the_stack_is_up_names_the_step_not_0_of_0(
    smoke: ModuleType, tmp_path: Path
) -> None:
    outcome = smoke.Outcome()
    outcome.fail("up", tmp_path / "compose.log")
    line = smoke.result_line(outcome, 2160)
    assert "0/0" not in line
    assert line == (
        "compose_smoke: services_healthy=not-run extraction=not-run training=not-run "
        f"flower=not-run failed_step=up log={tmp_path / 'compose.log'} seconds=2160"
    )
    assert not outcome.passed()


def test_the_first_failure_is_the_one_named(smoke: ModuleType, tmp_path: Path) -> None:
    outcome = smoke.Outcome(healthy=5, checked=8)
    outcome.fail("health", tmp_path / "compose.log")
    outcome.extraction = False
    outcome.fail("extraction", tmp_path / "other.log")
    line = smoke.result_line(outcome, 900)
    assert "services_healthy=5/8 extraction=fail training=not-run" in line
    assert f"failed_step=health log={tmp_path / 'compose.log'}" in line


class FakeStack:
    """Stands in for docker-compose: `up` fails as a compose timeout would; records calls."""

    calls: ClassVar[list[tuple[str, ...]]] = []

    def __init__(self, copy: Path, host_network_builds: bool, workdir: Path) -> None:
        self.log_path = workdir / "compose.log"
        self.env = {"COMPOSE_HTTP_TIMEOUT": "300"}

    def __call__(self, *args: str, **_kwargs: object) -> str:
        FakeStack.calls.append(args)
        if args[0] == "up":
            raise RuntimeError(f"docker-compose up failed (see {self.log_path})")
        return ""


def _args() -> argparse.Namespace:
    return argparse.Namespace(keep=False, build_timeout=10, health_timeout=10)


def test_a_failed_up_is_named_with_compose_log_and_the_stack_still_goes_down(
    smoke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(smoke, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))
    monkeypatch.setattr(smoke, "clean_clone", lambda dest: "0" * 40)
    monkeypatch.setattr(smoke, "configure", lambda copy: ({}, ("u", "p"), []))
    monkeypatch.setattr(smoke, "engine_has_bridge", lambda: True)
    monkeypatch.setattr(smoke, "Stack", FakeStack)
    FakeStack.calls = []
    assert smoke.smoke(_args(), tmp_path) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"failed_step=up log={tmp_path / 'compose.log'}" in line
    assert "services_healthy=not-run" in line
    assert [c[0] for c in FakeStack.calls] == ["up", "logs", "down"]


def test_a_failed_base_image_step_points_at_its_own_log(
    smoke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def failing(command: list[str], **_kwargs: object) -> None:
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(smoke, "run", failing)
    assert smoke.smoke(_args(), tmp_path) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"failed_step=base-images log={tmp_path / 'standin-bases.log'}" in line


def test_compose_runs_with_a_realistic_api_timeout(smoke: ModuleType, tmp_path: Path) -> None:
    stack = smoke.Stack(tmp_path, host_network_builds=False, workdir=tmp_path)
    assert int(stack.env["COMPOSE_HTTP_TIMEOUT"]) >= 300
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert "\nCOMPOSE_HTTP_TIMEOUT=300\n" in example
