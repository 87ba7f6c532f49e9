"""Issue #15 §8: no request handler may wait on a Celery result.

A gunicorn thread that waits for a worker is a thread the API loses for as long as the worker
is busy (20 predictions behind one training made `GET /feature-presets` time out). The web
edge and the domain code it calls only ever send: `shared.jobs.send` returns the task id, and
nothing in `webapp/` or `shared/` can reach a result object or its waiting methods.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from shared import jobs

ROOT = Path(__file__).resolve().parents[1]
# Names through which Celery code waits for a task or reads its result.
WAITING_NAMES = {
    "AsyncResult",
    "GroupResult",
    "ResultSet",
    "EagerResult",
    "allow_join_result",
    "disable_sync_subtasks",
}
SENDING_CALLS = {"send_task", "apply_async", "delay", "signature", "s", "si"}


def _sources() -> list[Path]:
    """Every module of the web edge and of the domain code it imports."""
    return sorted([*ROOT.glob("webapp/**/*.py"), *ROOT.glob("shared/**/*.py")])


def _offences(path: Path) -> list[str]:
    """Return the places of a module that could wait on a task result."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("celery.result"):
            found.append(f"{where} imports {node.module}")
        elif isinstance(node, ast.Name) and node.id in WAITING_NAMES:
            found.append(f"{where} uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in WAITING_NAMES:
            found.append(f"{where} uses .{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg in WAITING_NAMES:
            found.append(f"{where} passes {node.arg}=")
        elif _waits_on_a_sent_task(node):
            found.append(f"{where} waits on a task it sent")
    return found


def _waits_on_a_sent_task(node: ast.AST) -> bool:
    """`send_task(...).get()`, `x.delay(...).wait()` and the like, in one expression."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    receiver = node.func.value
    return (
        node.func.attr in {"get", "wait", "join", "join_native", "collect", "forget"}
        and isinstance(receiver, ast.Call)
        and isinstance(receiver.func, ast.Attribute)
        and receiver.func.attr in SENDING_CALLS
    )


def test_the_web_edge_and_domain_code_never_wait_on_a_task():
    offences = [place for path in _sources() for place in _offences(path)]
    assert offences == []


def test_jobs_only_sends_and_returns_the_id():
    public = {name for name, _ in inspect.getmembers(jobs, inspect.isfunction)}
    public = {name for name in public if not name.startswith("_")}
    assert "call" not in public  # the waiting helper is gone
    assert inspect.signature(jobs.send).return_annotation in (str, "str")
    # The Celery client never leaves shared/jobs.py: no other module can reach a result.
    users = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if path.name != "jobs.py" and "jobs.client(" in path.read_text()
    ]
    assert users == []


def test_the_check_finds_a_waiting_call(tmp_path):
    """The scanner itself: each way of waiting is found (else the tests above prove nothing)."""
    module = tmp_path / "waits.py"
    module.write_text(
        "from celery.result import AsyncResult\n"
        "def a(app):\n"
        "    return app.send_task('x').get(timeout=1)\n"
        "def b(result):\n"
        "    return result.get(disable_sync_subtasks=False)\n"
        "def c(task_id):\n"
        "    return AsyncResult(task_id).ready()\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = _offences(module)
    finally:
        ROOT = saved
    assert len(found) == 4, found  # the import, the chained get, the keyword, AsyncResult
