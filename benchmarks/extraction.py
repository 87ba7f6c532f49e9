"""Benchmark: what the extraction worker path adds on top of PyRadiomics, and 1 vs 2 workers.

Self-contained: starts Orthanc on loopback (private config in a temporary folder) with the ten
STS patients, creates and drops its own MariaDB database, uses Redis DBs 7-9 and cleans up on
the way out, also after a failure or SIGTERM. Run from the repository root:

    .venv/bin/python benchmarks/extraction.py

Configuration: the PET/CT preset plus an MR block, `combine_segmentation: false`, the three
GTVs of each study (3 vectors per study).

Per-study overhead. "full" is the Celery task function called in this process: claim the row,
fetch the study's contours and the image series they need from Orthanc over DICOMweb into a
temporary folder, convert, crop, resample, run PyRadiomics, store the vectors in MariaDB,
publish the events and close the row. "bare" is PyRadiomics alone,
`RadiomicsFeatureExtractor(params).execute(image, mask)`, in two variants:

- on the converted inputs (the ratio of the last line): the image and mask as the DICOM
  conversion produced them (native grid: CT in HU, PET in SUV, the rasterised contour),
  with the configuration's settings given to PyRadiomics itself: the same feature settings plus
  `resampledPixelSpacing`, the interpolator of the B-spline order and a padding of the same
  10 mm, so PyRadiomics crops and resamples as our preprocessing does. This is what a user
  running PyRadiomics on already-converted files with identical settings pays; the ratio is
  the cost of our plumbing (transfer, DICOM decoding, rasterising, database, events).
- on the preprocessed inputs (printed as the strict ratio): the exact image and mask objects the
  pipeline handed to PyRadiomics in that run (cropped and resampled, recorded by a
  pass-through wrapper), with the same params; the benchmark checks that it gives the stored
  feature values. Here our crop and resampling count as overhead too. Each study runs
`--repeat` times (full, then bare right after it) and the fastest wall time of each is kept,
which filters out other load on the machine; this process is first set up like a `-c 1` pool
process (thread caps, frozen GC). `overhead_ratio = sum(full) / sum(bare)`. The
same ratio over CPU seconds (this process plus Orthanc) is printed too, and the ratio to bare
without building the extractors (the worker builds one per parameter set and reuses it, about
40 ms saved per ROI, so it also shows the overhead without that gain).

Throughput. The ten studies go through real `celery worker -Q extraction` processes, once with
`-c 1` and once with `-c 2` (`--scaling-repeat` rounds, fastest kept): wall time from queueing
to the last task row ended. `scaling_2v1 = t1 / t2`.

The last line is `extraction: overhead_ratio=<full/bare> scaling_2v1=<t1/t2>`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fixtures import study_uids  # noqa: E402
from tests.support.live import WorkerProcess, wait_until  # noqa: E402
from tests.support.mariadb import admin  # noqa: E402
from tests.support.orthanc import OrthancServer, available  # noqa: E402

STS_DIR = ROOT.parent / "shared" / "data" / "sts"
REDIS = "redis://127.0.0.1:6379"
REDIS_DBS = {"CELERY_BROKER_URL": 7, "CELERY_RESULT_BACKEND": 8, "SOCKET_MESSAGE_QUEUE": 9}
ROIS = ["GTV_Mass_CT", "GTV_Mass_PET", "GTV_Mass_MR_T1"]
ALBUM = "sts"
USER = "bench"
WALL_TIMEOUT = 1800.0

Inputs = list[tuple[Any, Any, dict[str, Any]]]


@dataclass(frozen=True)
class Row:
    """A study's task row: its id and the Celery task id stored on it."""

    id: int
    celery_id: str


@dataclass(frozen=True)
class Sample:
    """One timed run: wall seconds, and CPU seconds of this process plus Orthanc."""

    wall: float
    cpu: float


@dataclass
class StudyTiming:
    """Every full and bare run of one study."""

    patient: str
    full: list[Sample] = field(default_factory=list)
    bare: list[Sample] = field(default_factory=list)
    execute: list[Sample] = field(default_factory=list)  # bare without building extractors
    native: list[Sample] = field(default_factory=list)  # bare on the converted inputs

    def best(self, kind: str, measure: str) -> float:
        """Return the fastest `full`/`bare`/`execute`/`native` run by `wall` or `cpu` seconds."""
        return min(getattr(sample, measure) for sample in getattr(self, kind))


class Stopwatch:
    """Wall time, plus the CPU time of this process and of helper processes (Orthanc)."""

    def __init__(self, helper_pids: list[int]) -> None:
        self.helper_pids = helper_pids
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        """Return the CPU seconds used so far by this process and the helpers."""
        total = time.process_time()
        for pid in self.helper_pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime
        return total

    def time(self, work: Callable[[], Any]) -> tuple[Sample, Any]:
        """Run `work`; return its Sample and its result."""
        wall, cpu = time.perf_counter(), self.cpu()
        result = work()
        return Sample(time.perf_counter() - wall, self.cpu() - cpu), result


# --- configuration and data -------------------------------------------------------------------


def petct_with_mr() -> dict[str, Any]:
    """The PET/CT preset extended with an MR block; each contour applies to its own series."""
    from shared.presets.service import DEFAULTS_DIR

    config = yaml.safe_load((DEFAULTS_DIR / "PETCT_all.yaml").read_text())
    config["general"]["combine_segmentation"] = False
    mr = yaml.safe_load(yaml.safe_dump(config["feature_extraction"]["CT"]))
    mr["pyradiomics"]["original"]["setting"] = {"binWidth": 25, "label": 1}
    config["feature_extraction"]["MR"] = mr
    return config


# --- services ---------------------------------------------------------------------------------


def flush_redis() -> None:
    """Empty the Redis DBs this benchmark uses (and only those)."""
    for number in REDIS_DBS.values():
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        try:
            client.flushdb()
        finally:
            client.close()


def start_services(
    stack: contextlib.ExitStack, data: Path, studies: dict[str, str]
) -> tuple[Path, Stopwatch]:
    """Start Orthanc, create the database, point the settings at them; undo all on exit."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qi2-bench-", dir=base)))
    orthanc = OrthancServer(tmp / "orthanc")
    stack.callback(orthanc.stop)
    orthanc.start()
    assert orthanc.process is not None
    started = time.perf_counter()
    count = orthanc.upload_folder(data)
    print(f"Orthanc {orthanc.url}: {count} instances in {time.perf_counter() - started:.1f} s")
    database = f"qi2_bench_extraction_{uuid.uuid4().hex[:8]}"
    admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    stack.callback(admin, f"DROP DATABASE IF EXISTS {database}")
    flush_redis()
    stack.callback(flush_redis)
    albums = tmp / "albums.yaml"
    albums.write_text(
        yaml.safe_dump({ALBUM: {"name": "STS", "study_uids": list(studies.values())}})
    )
    # The settings are read from the environment, by this process and by the workers.
    os.environ.update(
        {
            "DATABASE_URL": f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4",
            **{name: f"{REDIS}/{number}" for name, number in REDIS_DBS.items()},
            "SOCKETIO_CHANNEL": f"qi2-bench-{database}",
            "IMAGE_SOURCE": "dicomweb",
            "DICOMWEB_URL": orthanc.dicomweb_url,
            "DICOMWEB_ALBUMS_FILE": str(albums),
            "QI2_DATA_DIR": str(tmp / "data"),
            "LOG_LEVEL": "WARNING",
        }
    )
    from shared import bootstrap, runtime
    from shared.config import Settings
    from shared.db import migrate
    from shared.db import session as db_session

    migrate.upgrade(os.environ["DATABASE_URL"])
    # This process enqueues and reads rows as a worker does: its runtime from its settings.
    runtime.install(bootstrap.build(Settings()))
    stack.callback(db_session.dispose)  # before the DROP DATABASE registered above
    return tmp, Stopwatch([orthanc.process.pid])


# --- rows -------------------------------------------------------------------------------------


def create_extraction(studies: dict[str, str], config: dict[str, Any]) -> dict[str, Row]:
    """Create an extraction over the studies; return PatientID -> its task row (committed).

    The studies are listed through the configured source, as the API does, so the rows come
    in the platform's queueing order (largest study first).
    """
    from shared.config import Settings
    from shared.db.session import session_scope
    from shared.extractions import service
    from shared.imaging.factory import image_source
    from shared.presets.config_schema import dump_yaml

    listed = image_source(Settings()).list_studies(ALBUM)
    if {study.study_uid for study in listed} != set(studies.values()):
        raise RuntimeError("the album does not list the ten STS studies")
    with session_scope() as session:
        extraction = service.create(
            session,
            user_id=USER,
            album_id=ALBUM,
            album_name="STS",
            config_yaml=dump_yaml(config),
            rois=ROIS,
            studies=listed,
        )
        return {task.patient_id: Row(task.id, task.task_id) for task in extraction.tasks}


def task_states(task_ids: list[int]) -> dict[int, tuple[str, str | None]]:
    """Return task row id -> (status, error), read in a fresh transaction."""
    import sqlalchemy as sa

    from shared.db.session import session_scope
    from shared.extractions.models import ExtractionTask

    table = ExtractionTask.__table__
    with session_scope() as session:
        rows = session.execute(
            sa.select(table.c.id, table.c.status, table.c.error).where(table.c.id.in_(task_ids))
        )
        return {row.id: (row.status, row.error) for row in rows}


def stored_vectors(task_id: int) -> list[dict[str, float]]:
    """Return the feature vectors stored for a task, as name -> value mappings."""
    import sqlalchemy as sa

    from shared.db.session import session_scope
    from shared.extractions.models import FeatureNameSet, FeatureVector

    with session_scope() as session:
        rows = session.execute(
            sa.select(FeatureVector.values, FeatureNameSet.names)
            .join(FeatureNameSet, FeatureNameSet.id == FeatureVector.name_set_id)
            .where(FeatureVector.feature_extraction_task_id == task_id)
        ).all()
    return [
        dict(zip(names.split("\n"), np.frombuffer(blob, "<f8").tolist(), strict=True))
        for blob, names in rows
    ]


# --- per-study overhead -----------------------------------------------------------------------


@contextlib.contextmanager
def recording_inputs() -> Iterator[Inputs]:
    """Record the (image, mask, params) the pipeline hands to PyRadiomics (pass-through)."""
    from workers.extraction import pipeline

    original = pipeline.extract_image_mask
    recorded: Inputs = []

    def record(image: Any, mask: Any, params: dict[str, Any]) -> dict[str, float]:
        recorded.append((image, mask, params))
        return original(image, mask, params)

    pipeline.extract_image_mask = record
    try:
        yield recorded
    finally:
        pipeline.extract_image_mask = original


INTERPOLATORS = {0: "sitkNearestNeighbor", 1: "sitkLinear"}


def native_params(params: dict[str, Any], config: Any, label: str) -> dict[str, Any]:
    """Give PyRadiomics the configuration's crop and resampling as its own settings."""
    processors = config.volume_preprocessing.get(label) or config.volume_preprocessing.get("common")
    resampler = processors.bspline_resampler if processors else None
    setting = dict(params.get("setting", {}))
    if resampler is not None:
        spacing = resampler.resampling_spacing
        setting["resampledPixelSpacing"] = spacing
        setting["interpolator"] = INTERPOLATORS.get(resampler.order, "sitkBSpline")
        setting["padDistance"] = round(config.general.padding / min(spacing))
    return {**params, "setting": setting}


@contextlib.contextmanager
def recording_native() -> Iterator[Inputs]:
    """Record the converted (native-grid) image, mask and PyRadiomics settings of each ROI."""
    from workers.extraction import pipeline

    original = pipeline._extract_job
    recorded: Inputs = []

    def record(job: Any, volumes: Any, masks: Any, config: Any, report: Any) -> Any:
        image = volumes[job.series.series_uid]
        for roi in job.rois:
            for block in config.feature_extraction[job.label].pyradiomics.values():
                params = native_params(pipeline.pyradiomics_params(block), config, job.label)
                recorded.append((image, masks[roi], params))
        return original(job, volumes, masks, config, report)

    pipeline._extract_job = record
    try:
        yield recorded
    finally:
        pipeline._extract_job = original


def full_run(watch: Stopwatch, task_id: int) -> tuple[Sample, Inputs, Inputs]:
    """Run the worker's task in this process; return its Sample, preprocessed and native inputs."""
    from workers.extraction import tasks

    with recording_inputs() as inputs, recording_native() as native:
        sample, outcome = watch.time(lambda: tasks.extract_study(task_id))
    if outcome != "success":
        raise RuntimeError(f"task {task_id} ended with {outcome}: {task_states([task_id])}")
    return sample, list(inputs), list(native)


def bare_run(watch: Stopwatch, inputs: Inputs) -> tuple[Sample, Sample, list[dict[str, float]]]:
    """Time PyRadiomics alone on recorded inputs: (build + execute, execute, feature values)."""
    from radiomics import featureextractor

    def build() -> list[Any]:
        with warnings.catch_warnings():  # as the pipeline does (pykwalify's load_module)
            warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
            return [featureextractor.RadiomicsFeatureExtractor(params) for _, _, params in inputs]

    built, extractors = watch.time(build)
    pairs = list(zip(extractors, inputs, strict=True))
    executed, results = watch.time(lambda: [e.execute(im, mask) for e, (im, mask, _) in pairs])
    features = [
        {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}
        for result in results
    ]
    both = Sample(built.wall + executed.wall, built.cpu + executed.cpu)
    return both, executed, features


def same_features(bare: list[dict[str, float]], stored: list[dict[str, float]]) -> bool:
    """Tell whether the bare vectors are the stored ones (same names and values, any order).

    Stored PT vectors also hold the PET measures (MTV, TLG, SUVpeak) that bare PyRadiomics
    does not compute.
    """
    from workers.extraction.pet import NAMES as PET_EXTRAS

    def found(vector: dict[str, float]) -> bool:
        values = np.array(list(vector.values()))
        return any(
            other.keys() - PET_EXTRAS == vector.keys()
            and np.allclose([other[k] for k in vector], values, rtol=1e-12, atol=0, equal_nan=True)
            for other in stored
        )

    return len(bare) == len(stored) and all(found(vector) for vector in bare)


def overhead(
    watch: Stopwatch, studies: dict[str, str], config: dict[str, Any], repeat: int
) -> list[StudyTiming]:
    """Time full and bare per study, `repeat` rounds; check bare against the stored values."""
    timings = {patient: StudyTiming(patient) for patient in studies}
    for round_number in range(1, repeat + 1):
        for patient, row in sorted(create_extraction(studies, config).items()):
            full, inputs, native_inputs = full_run(watch, row.id)
            bare, executed, features = bare_run(watch, inputs)
            native, _, _ = bare_run(watch, native_inputs)
            if round_number == 1 and not same_features(features, stored_vectors(row.id)):
                raise RuntimeError(f"{patient}: bare PyRadiomics differs from the stored vectors")
            timings[patient].full.append(full)
            timings[patient].bare.append(bare)
            timings[patient].execute.append(executed)
            timings[patient].native.append(native)
            print(
                f"  round {round_number} {patient}: full {full.wall:5.2f} s  "
                f"bare {native.wall:5.2f} s on converted, {bare.wall:5.2f} s on preprocessed "
                f"inputs ({len(inputs)} vectors)",
                flush=True,
            )
    return list(timings.values())


def report_overhead(timings: list[StudyTiming]) -> float:
    """Print the fastest runs per study and the ratios; return full / bare-on-converted."""
    for timing in timings:
        full, native = timing.best("full", "wall"), timing.best("native", "wall")
        bare = timing.best("bare", "wall")
        print(
            f"  {timing.patient}: full {full:5.2f} s  bare {native:5.2f} s (converted) "
            f"{bare:5.2f} s (preprocessed)  ratio {full / native:.2f} / strict {full / bare:.2f}"
        )
    totals = {
        (kind, measure): sum(t.best(kind, measure) for t in timings)
        for kind in ("full", "bare", "execute", "native")
        for measure in ("wall", "cpu")
    }
    full, bare, execute, native = (
        totals[kind, "wall"] for kind in ("full", "bare", "execute", "native")
    )
    print(
        f"  total: full {full:.2f} s  bare on converted inputs {native:.2f} s  "
        f"overhead_ratio {full / native:.3f}  "
        f"(CPU {totals['full', 'cpu'] / totals['native', 'cpu']:.3f})"
    )
    print(
        f"  strict: bare on the preprocessed inputs {bare:.2f} s, full / that = {full / bare:.3f} "
        f"(CPU {totals['full', 'cpu'] / totals['bare', 'cpu']:.3f}); without building the "
        f"extractors {execute:.2f} s, full / that = {full / execute:.3f}"
    )
    return full / native


# --- throughput -------------------------------------------------------------------------------


def throughput(
    studies: dict[str, str], config: dict[str, Any], concurrency: int, logs: Path
) -> float:
    """Run the album through a real Celery worker with `concurrency` processes; wall seconds."""
    from shared import jobs

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = WorkerProcess("extraction", concurrency, env, logs / f"worker-c{concurrency}.log")
    try:
        worker.wait_ready()
        rows = list(create_extraction(studies, config).values())
        ids = [row.id for row in rows]
        started = time.perf_counter()
        for row in rows:
            jobs.send(jobs.EXTRACT_STUDY, row.id, task_id=row.celery_id)
        states = wait_until(lambda: _all_ended(ids), WALL_TIMEOUT, interval=0.1)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
    failed = {task_id: error for task_id, (status, error) in states.items() if status != "SUCCESS"}
    if failed:
        raise RuntimeError(f"-c {concurrency}: studies failed: {failed}")
    threads = [line for line in worker.log.read_text().splitlines() if "per library" in line]
    print(f"    -c {concurrency} pool: {'; '.join(line.split(': ')[-1] for line in threads)}")
    return elapsed


def _all_ended(ids: list[int]) -> dict[int, tuple[str, str | None]] | None:
    """Return the task states once every row has ended, else None."""
    states = task_states(ids)
    ended = all(status in ("SUCCESS", "FAILURE") for status, _ in states.values())
    return states if ended and len(states) == len(ids) else None


def scaling(studies: dict[str, str], config: dict[str, Any], repeat: int, logs: Path) -> float:
    """Time the album with -c 1 and -c 2 (order alternating per round); return t1 / t2."""
    walls: dict[int, list[float]] = {1: [], 2: []}
    for round_number in range(repeat):
        for concurrency in (1, 2) if round_number % 2 == 0 else (2, 1):
            wall = throughput(studies, config, concurrency, logs)
            walls[concurrency].append(wall)
            print(f"  -c {concurrency}: {wall:6.2f} s for {len(studies)} studies ({load()})")
    result = min(walls[1]) / min(walls[2])
    print(f"  fastest: -c 1 {min(walls[1]):.2f} s, -c 2 {min(walls[2]):.2f} s, ratio {result:.3f}")
    return result


# --- main -------------------------------------------------------------------------------------


def load() -> str:
    """Describe the machine's load: other work on it skews the timings, the scaling most."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) {five:.1f} (5 min)"


def run(args: argparse.Namespace) -> tuple[float, float]:
    """Set up the services, run both measurements, return (overhead_ratio, scaling_2v1)."""
    import radiomics

    radiomics.setVerbosity(logging.ERROR)  # its per-ROI GLCM notice would drown the figures
    studies = study_uids(args.data)
    print(f"{len(studies)} studies, ROIs {', '.join(ROIS)}; {os.cpu_count()} CPUs, {load()}")
    with contextlib.ExitStack() as stack:
        tmp, watch = start_services(stack, args.data, studies)
        config = petct_with_mr()
        from workers import celery_app

        # This process runs the task like a `-c 1` pool process: same thread caps and GC.
        celery_app.prepare_compute_process(celery_app.usable_cores())
        print(f"Per-study overhead, in this process ({args.repeat} rounds, fastest kept):")
        ratio = report_overhead(overhead(watch, studies, config, args.repeat))
        print(f"Throughput through Celery workers ({args.scaling_repeat} round(s)):")
        factor = scaling(studies, config, args.scaling_repeat, tmp)
    return ratio, factor


def _terminate(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt so that every service is stopped on the way out."""
    raise KeyboardInterrupt


def main() -> None:
    """Parse the options, run the benchmark and print the summary line last."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=STS_DIR, help="the STS patients folder")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the per-study timing")
    parser.add_argument("--scaling-repeat", type=int, default=2, help="rounds of -c 1 and -c 2")
    args = parser.parse_args()
    if not available():
        sys.exit("Orthanc and its DICOMweb plugin are not installed")
    signal.signal(signal.SIGTERM, _terminate)
    ratio, factor = run(args)
    print(f"extraction: overhead_ratio={ratio:.3f} scaling_2v1={factor:.3f}")


if __name__ == "__main__":
    main()
