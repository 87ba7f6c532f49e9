"""A process that builds its runtime has every table mapped, whatever its edge imports."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_a_worker_process_configures_every_mapper():
    # The training worker once loaded no collections model: its first claim failed to map
    # `training_run.feature_collection_id` (NoReferencedTableError), and no run could start.
    code = (
        "import workers.celery_app, workers.training.tasks, workers.prediction.tasks\n"
        "from shared.db.base import Base\n"
        "Base.metadata.sorted_tables  # resolves every foreign key, as a flush does\n"
        "print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
