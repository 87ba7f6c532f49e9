"""benchmarks/api_load.py --ceiling: which step is the ceiling, from the clients' figures."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from tests.support.scripts import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/api_load.py (a script), imported from its path."""
    return load_script("api_load", "benchmarks/api_load.py")


def _step(bench: ModuleType, clients: int, p95: float, connected: int | None = None, lost=0):
    lags = [p95 * 0.5] * 90 + [p95] * 10
    return bench.Step(clients, connected or clients, 100, 100 - lost, lags, 1.0)


def test_the_ceiling_is_the_last_step_under_one_second(bench: ModuleType) -> None:
    steps = [_step(bench, 500, 60), _step(bench, 1000, 450), _step(bench, 2000, 1200)]
    line = bench.ceiling_verdict(steps)
    assert line.startswith("sockets_ceiling: clients=1000 lag_p95_ms=450 over_at=2000")
    assert "over_lag_p95_ms=1200" in line


def test_refused_clients_or_lost_events_also_pass_the_ceiling(bench: ModuleType) -> None:
    assert _step(bench, 800, 100, connected=790).over()
    assert _step(bench, 800, 100, lost=5).over()
    assert not _step(bench, 800, 100, lost=1).over()
    line = bench.ceiling_verdict([_step(bench, 500, 100, connected=400)])
    assert "clients=0" in line and "over_at=500" in line and "over_connected=400/500" in line


def test_no_step_over_says_so(bench: ModuleType) -> None:
    line = bench.ceiling_verdict([_step(bench, 500, 60), _step(bench, 1000, 90)])
    assert "clients=1000" in line and "over_at=none" in line


def test_step_figures_count_each_users_clients_and_the_lags(bench: ModuleType) -> None:
    # 4 clients over 2 users: each event goes to 2 clients; 3 events sent.
    event = {"seq": 0, "sent": 100.0, "status": "x"}
    received = [[0, "feature-status", "feature-status" + json.dumps(event), 100.25]]
    step = bench.step_figures(["t"] * 4, 2, 3, {"connected": 4, "events": received}, 0.5)
    assert step.expected == 6 and step.received == 1
    assert step.lags == [pytest.approx(250.0)]
