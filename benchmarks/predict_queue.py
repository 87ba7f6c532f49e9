"""Benchmark: how long a prediction waits for its result while trainings run, for three ways of
running predictions (issue #15 §8, ADR 0005). Run from the repository root:

    .venv/bin/python benchmarks/predict_queue.py [--redis-db N] [--options shared,slot,queue]

Options (each a set of real Celery workers of this repository):
- `shared`: the layout before issue #15: the training worker (`-P threads -c 1`) also takes the
  prediction queue; a prediction gets the one slot when it is free.
- `slot`: the training worker with a second slot for predictions (`-P threads -c 2` on both
  queues). Celery cannot reserve a slot for one queue, so a second training takes it too.
- `queue`: predictions on their own queue and worker (`-Q prediction`, prefork `-c 1`); the
  training worker takes `training` only.

Scenarios: `1` = one long training running; `2` = two long trainings sent at once (a backlog).
Each training is the default grid in full-dataset mode on the seeded 300-patient extraction.
Once the first training runs, one prediction (a logistic regression on the same 300 patients,
with its bootstrap validation) is sent through the API; its time to result is the time from
the POST to its row's end. Then the trainings are waited for, so the next round starts idle.

Last line: `predict_queue: shared_1= shared_2= slot_1= slot_2= queue_1= queue_2= training_s=`
(seconds; training_s = the longest single training seen running alone).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_platform import (
    ENDED,
    Platform,
    close_platform,
    load_average,
    open_platform,
)

OPTIONS = {
    "shared": [("worker-training", "training,prediction", "threads", 1)],
    "slot": [("worker-training", "training,prediction", "threads", 2)],
    "queue": [
        ("worker-training", "training", "threads", 1),
        ("worker-prediction", "prediction", "prefork", 1),
    ],
}


def round_trip(platform: Platform, option: str, scenario: int, model_id: int) -> dict:
    """Start the option's workers, the trainings and one prediction; return the timings."""
    for name, queues, pool, concurrency in OPTIONS[option]:
        platform.start_worker(name, queues, pool=pool, concurrency=concurrency)
    try:
        runs = [platform.train(algorithms=None) for _ in range(scenario)]
        platform.wait_row("training_run", runs[0], ("STARTED", "PROGRESS", *ENDED), 600)
        time.sleep(2)  # the grid search is under way
        sent = time.monotonic()
        response = platform.predict(model_id)
        response.raise_for_status()
        prediction = platform.wait_row("prediction", response.json()["id"], ENDED, 3600)
        waited = time.monotonic() - sent
        trainings = [platform.wait_row("training_run", run, ENDED, 3600) for run in runs]
    finally:
        for name, *_ in OPTIONS[option]:
            platform.stop(name)
    durations = [(t.finished_at - t.started_at).total_seconds() for t in trainings]
    print(
        f"{option} / {scenario} training(s): prediction {prediction.status} after {waited:.1f} s "
        f"(POST {response.status_code}); trainings {[round(d, 1) for d in durations]} s; "
        f"load {load_average()}",
        flush=True,
    )
    return {"waited": waited, "durations": durations}


def main() -> None:
    """Parse options, run every (option, scenario), print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--options", default="shared,slot,queue")
    parser.add_argument("--scenarios", default="1,2")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    platform = open_platform(args.redis_db, "predq")
    figures: dict[str, float] = {}
    alone: list[float] = []
    try:
        platform.start_web()
        platform.start_worker("worker-training", "training", pool="threads")
        model_id = platform.small_model()
        platform.stop("worker-training")
        for option in args.options.split(","):
            for scenario in (int(s) for s in args.scenarios.split(",")):
                result = round_trip(platform, option, scenario, model_id)
                figures[f"{option}_{scenario}"] = result["waited"]
                if scenario == 1 and option != "slot":
                    alone += result["durations"]
    finally:
        close_platform(platform, args.keep_logs)
    line = " ".join(f"{key}={value:.1f}" for key, value in figures.items())
    print(f"predict_queue: {line} training_s={max(alone, default=0.0):.1f}")


if __name__ == "__main__":
    main()
