"""Benchmark: build the feature-details CSVs of a 1,000-patient extraction from MySQL.

Compares the compact storage (one packed float64 vector per study, modality and ROI) with the
reference backend's one-row-per-value EAV table read through a pandas pivot_table. Creates and
drops its own MariaDB database. Run from the repository root:

    .venv/bin/python benchmarks/feature_table.py

The last line is `feature_table: cold_s=<x> warm_s=<y> eav_cold_s=<z> speedup=<z/x>`.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pymysql
import sqlalchemy as sa
import sqlalchemy.orm as so

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.db import migrate  # noqa: E402
from shared.db.all_models import Base  # noqa: E402, F401  (registers every mapper)
from shared.extractions.models import ExtractionTask, FeatureExtraction  # noqa: E402
from shared.features import storage, table  # noqa: E402
from shared.labels.models import LabelCategory  # noqa: E402
from tests.support.factories import make_outcome  # noqa: E402
from tests.support.mariadb import MYSQL, admin  # noqa: E402

N_PATIENTS = 1000
N_FAILED = 10  # studies without values: padded rows, as in a real album
MODALITY = "CT"
ROIS = ("GTV_N", "GTV_T")
SEED = 20261126

IMAGE_TYPES = ["original", "log-sigma-1-0-mm-3D", "log-sigma-2-0-mm-3D", "log-sigma-3-0-mm-3D"]
IMAGE_TYPES += [f"wavelet-{c}" for c in ("LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH", "LLL")]
CLASSES = {
    "firstorder": "10Percentile 90Percentile Energy Entropy InterquartileRange Kurtosis Maximum "
    "MeanAbsoluteDeviation Mean Median Minimum Range RobustMeanAbsoluteDeviation RootMeanSquared "
    "Skewness TotalEnergy Uniformity Variance",
    "glcm": "Autocorrelation ClusterProminence ClusterShade ClusterTendency Contrast Correlation "
    "DifferenceAverage DifferenceEntropy DifferenceVariance Id Idm Idmn Idn Imc1 Imc2 "
    "InverseVariance JointAverage JointEnergy JointEntropy MCC MaximumProbability SumAverage "
    "SumEntropy SumSquares",
    "glrlm": "GrayLevelNonUniformity GrayLevelNonUniformityNormalized GrayLevelVariance "
    "HighGrayLevelRunEmphasis LongRunEmphasis LongRunHighGrayLevelEmphasis "
    "LongRunLowGrayLevelEmphasis LowGrayLevelRunEmphasis RunEntropy RunLengthNonUniformity "
    "RunLengthNonUniformityNormalized RunPercentage RunVariance ShortRunEmphasis "
    "ShortRunHighGrayLevelEmphasis ShortRunLowGrayLevelEmphasis",
    "glszm": "GrayLevelNonUniformity GrayLevelNonUniformityNormalized GrayLevelVariance "
    "HighGrayLevelZoneEmphasis LargeAreaEmphasis LargeAreaHighGrayLevelEmphasis "
    "LargeAreaLowGrayLevelEmphasis LowGrayLevelZoneEmphasis SizeZoneNonUniformity "
    "SizeZoneNonUniformityNormalized SmallAreaEmphasis SmallAreaHighGrayLevelEmphasis "
    "SmallAreaLowGrayLevelEmphasis ZoneEntropy ZonePercentage ZoneVariance",
    "gldm": "DependenceEntropy DependenceNonUniformity DependenceNonUniformityNormalized "
    "DependenceVariance GrayLevelNonUniformity GrayLevelVariance HighGrayLevelEmphasis "
    "LargeDependenceEmphasis LargeDependenceHighGrayLevelEmphasis "
    "LargeDependenceLowGrayLevelEmphasis LowGrayLevelEmphasis SmallDependenceEmphasis "
    "SmallDependenceHighGrayLevelEmphasis SmallDependenceLowGrayLevelEmphasis",
    "ngtdm": "Busyness Coarseness Complexity Contrast Strength",
}
SHAPE = (
    "Elongation Flatness LeastAxisLength MajorAxisLength Maximum2DDiameterColumn "
    "Maximum2DDiameterRow Maximum2DDiameterSlice Maximum3DDiameter MeshVolume MinorAxisLength "
    "Sphericity SurfaceArea SurfaceVolumeRatio VoxelVolume"
)


def feature_names() -> list[str]:
    """Return 1,130 PyRadiomics-style names: 12 image types × 93 texture features + 14 shape."""
    names = [f"original_shape_{f}" for f in SHAPE.split()]
    for image_type in IMAGE_TYPES:
        names += [f"{image_type}_{c}_{f}" for c, feats in CLASSES.items() for f in feats.split()]
    return names


def synthetic_values(names: list[str]) -> np.ndarray:
    """Return (patients × ROIs × features) values with radiomics-like magnitudes and a few NaN."""
    rng = np.random.default_rng(SEED)
    scale = 10.0 ** rng.uniform(-3, 6, len(names))
    scale[[i for i, n in enumerate(names) if "Energy" in n and "firstorder" in n]] = 1e11
    signed = rng.random(len(names)) < 0.2
    values = rng.lognormal(0.0, 0.6, (N_PATIENTS, len(ROIS), len(names))) * scale
    values[..., signed] -= scale[signed]
    values[rng.random(values.shape) < 0.001] = np.nan
    return values


def url_for(database: str) -> str:
    """Return the SQLAlchemy URL of a benchmark database."""
    return f"mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4"


# --- seeding ----------------------------------------------------------------------------------


def create_extraction(session: so.Session) -> tuple[int, list[int]]:
    """Create the extraction and one task per study; return (extraction id, task ids)."""
    extraction = FeatureExtraction(
        user_id="bench",
        album_id="album-bench",
        album_name="Bench album",
        config_yaml="{}",
        rois=list(ROIS),
    )
    session.add(extraction)
    session.flush()
    tasks = [
        ExtractionTask(
            feature_extraction_id=extraction.id,
            study_uid=f"1.2.826.0.1.{p}",
            patient_id=f"P{p:04d}",
            status="SUCCESS" if p < N_PATIENTS else "FAILURE",
        )
        for p in range(N_PATIENTS + N_FAILED)
    ]
    session.add_all(tasks)
    session.flush()
    return extraction.id, [task.id for task in tasks]


def create_outcome(session: so.Session) -> int:
    """Create a classification outcome with a random 0/1 label per patient; return its id."""
    rng = np.random.default_rng(SEED + 1)
    labels = {f"P{p:04d}": str(int(rng.integers(0, 2))) for p in range(N_PATIENTS)}
    return make_outcome(session, "bench", "album-bench", labels, "Outcome").id


def seed_compact(engine: sa.Engine, names: list[str], values: np.ndarray) -> tuple[int, int]:
    """Store the values through the compact storage; return (extraction id, outcome id)."""
    with so.Session(engine) as session:
        extraction_id, task_ids = create_extraction(session)
        outcome_id = create_outcome(session)
        session.commit()
        for p, task_id in enumerate(task_ids[:N_PATIENTS]):  # one call per study, as workers do
            vectors = [
                storage.VectorIn(MODALITY, roi, names, values[p, r]) for r, roi in enumerate(ROIS)
            ]
            storage.store_study_vectors(
                session, extraction_id=extraction_id, task_id=task_id, vectors=vectors
            )
            if p % 100 == 99:  # workers commit per study; batching only saves fsyncs here
                session.commit()
        session.commit()
        return extraction_id, outcome_id


EAV_DDL = [
    """CREATE TABLE eav_modality (id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME,
       updated_at DATETIME, name VARCHAR(255))""",
    """CREATE TABLE eav_roi (id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME,
       updated_at DATETIME, name VARCHAR(255))""",
    """CREATE TABLE eav_feature_definition (id INT AUTO_INCREMENT PRIMARY KEY,
       created_at DATETIME, updated_at DATETIME, name VARCHAR(255))""",
    # The reference backend's fact table: one FLOAT per row, four FK ids (indexed after loading).
    """CREATE TABLE eav_feature_value (id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME,
       updated_at DATETIME, value FLOAT, feature_definition_id INT,
       feature_extraction_task_id INT, modality_id INT, roi_id INT)""",
]
# One index per FK column, as InnoDB creates for the reference's foreign keys; built in bulk.
EAV_INDEXES = """ALTER TABLE eav_feature_value ADD KEY (feature_definition_id),
    ADD KEY (feature_extraction_task_id), ADD KEY (modality_id), ADD KEY (roi_id)"""


def eav_rows(task_ids: np.ndarray, names: list[str], values: np.ndarray) -> pd.DataFrame:
    """Return one row per value: value and the four ids, as the reference backend stored them."""
    p, r, f = np.meshgrid(
        np.arange(N_PATIENTS), np.arange(len(ROIS)), np.arange(len(names)), indexing="ij"
    )
    return pd.DataFrame(
        {
            "value": values.ravel(),
            "definition": f.ravel() + 1,
            "task": task_ids[p.ravel()],
            "modality": 1,
            "roi": r.ravel() + 1,
        }
    )


def create_eav_lookups(cur: pymysql.cursors.Cursor, names: list[str]) -> None:
    """Create the EAV tables and fill the modality, ROI and definition lookups."""
    for ddl in EAV_DDL:
        cur.execute(ddl)
    insert = "INSERT INTO {} (created_at, updated_at, name) VALUES (NOW(), NOW(), %s)"
    cur.execute(insert.format("eav_modality"), (MODALITY,))
    cur.executemany(insert.format("eav_roi"), list(ROIS))
    cur.executemany(insert.format("eav_feature_definition"), names)


def seed_eav(database: str, extraction_id: int, names: list[str], values: np.ndarray) -> None:
    """Store the same values one row per value, bulk-loaded with LOAD DATA LOCAL INFILE."""
    conn = pymysql.connect(**MYSQL, database=database, local_infile=True, autocommit=True)
    try:
        with conn.cursor() as cur:
            create_eav_lookups(cur, names)
            cur.execute(
                "SELECT id FROM feature_extraction_task WHERE feature_extraction_id=%s ORDER BY id",
                (extraction_id,),
            )
            task_ids = np.array([row[0] for row in cur.fetchall()][:N_PATIENTS])
            with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as tmp:
                eav_rows(task_ids, names, values).to_csv(
                    tmp, sep="\t", header=False, index=False, na_rep="\\N"
                )
            try:
                cur.execute(
                    f"LOAD DATA LOCAL INFILE '{tmp.name}' INTO TABLE eav_feature_value "
                    "(value, feature_definition_id, feature_extraction_task_id, modality_id, "
                    "roi_id) SET created_at = NOW(), updated_at = NOW()"
                )
            finally:
                os.unlink(tmp.name)
            cur.execute(EAV_INDEXES)
    finally:
        conn.close()


SIZE_QUERY = sa.text(
    "SELECT table_name, data_length + index_length FROM information_schema.tables "
    "WHERE table_schema = :s AND table_name IN ('feature_vector', 'eav_feature_value')"
)


# --- the measured work ------------------------------------------------------------------------


STAGES: dict[str, float] = {}  # wall seconds of the last build_compact, by stage


def build_compact(engine: sa.Engine, extraction_id: int, outcome_id: int) -> tuple[bytes, bytes]:
    """Load the matrix and the outcome, build both CSV parts; return (tabular, chart) bytes."""
    start = time.perf_counter()
    with so.Session(engine) as session:
        matrix = storage.load_feature_matrix(session, extraction_id=extraction_id)
        outcome = storage.load_outcome(session, label_category_id=outcome_id)
    loaded = time.perf_counter()
    tabular = table.tabular_csv(matrix)
    built = time.perf_counter()
    chart = table.chart_csv(matrix, outcome=outcome)
    charted = time.perf_counter()
    table.feature_details_multipart(tabular, chart)
    STAGES.update(
        load=loaded - start,
        tabular=built - loaded,
        chart=charted - built,
        multipart=time.perf_counter() - charted,
    )
    return tabular, chart


EAV_QUERY = sa.text(
    "SELECT t.study_uid, t.patient_id, m.name, r.name, d.name, v.value "
    "FROM eav_feature_value v "
    "JOIN feature_extraction_task t ON t.id = v.feature_extraction_task_id "
    "JOIN eav_modality m ON m.id = v.modality_id JOIN eav_roi r ON r.id = v.roi_id "
    "JOIN eav_feature_definition d ON d.id = v.feature_definition_id "
    "WHERE t.feature_extraction_id = :e"
)
KEYS = ["PatientID", "Modality", "ROI"]


def eav_fetch(
    engine: sa.Engine, extraction_id: int, outcome_id: int
) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """Return the long EAV frame, the labels and the extraction's patients."""
    with so.Session(engine) as session:
        rows = session.execute(EAV_QUERY, {"e": extraction_id}).all()
        category = session.get(LabelCategory, outcome_id)
        labels = {label.patient_id: label.label_content["Outcome"] for label in category.labels}
        patients = session.scalars(
            sa.select(ExtractionTask.patient_id).where(
                ExtractionTask.feature_extraction_id == extraction_id
            )
        ).all()
    long = pd.DataFrame(rows, columns=["study_uid", *KEYS, "name", "value"])
    return long, labels, list(patients)


def eav_tabular(long: pd.DataFrame, patients: list[str]) -> pd.DataFrame:
    """Pivot (mean of duplicates, as the reference did), pad patients without values, sort."""
    wide = long.pivot_table(index=KEYS, columns="name", values="value").reset_index()
    groups = wide[["Modality", "ROI"]].drop_duplicates().itertuples(index=False)
    missing = sorted(set(patients) - set(wide["PatientID"]))
    padding = pd.DataFrame([(p, m, r) for m, r in groups for p in missing], columns=KEYS)
    return pd.concat([wide, padding]).sort_values(KEYS)


def eav_chart(tabular: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Per-patient matrix, z-scores with pandas, the F ranking; one row per feature ID."""
    parts = []
    for (modality, roi), group in tabular.groupby(["Modality", "ROI"]):
        part = group.drop(columns=["Modality", "ROI"]).set_index("PatientID")
        part = part.dropna(axis=1, how="all")
        part.columns = [table.feature_id(modality, roi, c) for c in part.columns]
        parts.append(part)
    features = pd.concat(parts, axis=1)
    chart = ((features - features.mean()) / features.std(ddof=0).replace(0, 1)).T
    labelled = features.loc[[p for p in features.index if p in labels]]
    codes = pd.factorize(pd.Series([labels[p] for p in labelled.index]))[0]
    f = table.anova_f(labelled.fillna(labelled.mean()).to_numpy(), codes)
    rank = pd.Series(np.nan_to_num(-f, nan=np.inf), index=chart.index).rank(method="first")
    chart["Ranking"] = rank.astype(int) - 1
    return chart


def build_eav(engine: sa.Engine, extraction_id: int, outcome_id: int) -> tuple[bytes, bytes]:
    """The reference backend's path: EAV rows → pivot_table → pandas z-scores → to_csv."""
    long, labels, patients = eav_fetch(engine, extraction_id, outcome_id)
    tabular = eav_tabular(long, patients)
    tabular_text = tabular.round(3).to_csv(index=False)
    chart_text = eav_chart(tabular, labels).round(3).to_csv(index_label="FeatureID")
    table.feature_details_multipart(tabular_text, chart_text)
    return tabular_text.encode(), chart_text.encode()


def child(kind: str, url: str, extraction_id: int, outcome_id: int) -> None:
    """Fresh-process measurement: connect, load, build; print one JSON line.

    Modules are imported and the engine configured before the clock starts, as a web worker
    does at startup; the connection, every query and all decoding and formatting are timed.
    """
    from shared.db.session import make_engine

    engine = make_engine(url, poolclass=sa.pool.NullPool)
    build = build_compact if kind == "compact" else build_eav
    start, cpu = time.perf_counter(), time.process_time()
    tabular, chart = build(engine, extraction_id, outcome_id)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "tabular_bytes": len(tabular),
        "chart_bytes": len(chart),
        "tabular_lines": tabular.count(b"\n"),
        "chart_lines": chart.count(b"\n"),
        "digest": hashlib.sha256(tabular + chart).hexdigest()[:16],
        "stages": STAGES,
    }
    print(json.dumps(result))


def run_child(kind: str, url: str, extraction_id: int, outcome_id: int) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, url, str(extraction_id), str(outcome_id)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_compact(url: str, extraction_id: int, outcome_id: int) -> tuple[float, float]:
    """Time the compact path cold (3 fresh processes, median) and warm (pooled, in-process)."""
    colds = [run_child("compact", url, extraction_id, outcome_id) for _ in range(3)]
    for cold in colds:
        stages = ", ".join(f"{k} {v:.3f}" for k, v in cold["stages"].items())
        print(
            f"compact cold (fresh process): {cold['seconds']:.3f} s, cpu "
            f"{cold['cpu_seconds']:.3f} s [{stages}]",
            flush=True,
        )
    first = colds[0]
    print(
        f"  tabular {first['tabular_bytes']} B / {first['tabular_lines']} lines, "
        f"chart {first['chart_bytes']} B / {first['chart_lines']} lines",
        flush=True,
    )
    engine = sa.create_engine(url, pool_size=1)
    gc.collect()  # the seeding's garbage is not the request's cost
    runs = []
    for _ in range(4):
        start = time.perf_counter()
        tabular, chart = build_compact(engine, extraction_id, outcome_id)
        runs.append(time.perf_counter() - start)
    engine.dispose()
    warm = statistics.median(runs[1:])
    digests = {c["digest"] for c in colds} | {hashlib.sha256(tabular + chart).hexdigest()[:16]}
    print(
        f"compact warm (in-process, median of the last 3 of 4): {warm:.3f} s "
        f"[{', '.join(f'{t:.3f}' for t in runs)}]; identical bytes in every run: "
        f"{len(digests) == 1}",
        flush=True,
    )
    if len(digests) != 1:
        raise RuntimeError("the runs produced different outputs")
    return statistics.median(c["seconds"] for c in colds), warm


def print_sizes(engine: sa.Engine, database: str) -> None:
    """Print the on-disk size of both fact tables (InnoDB statistics, approximate)."""
    with engine.connect() as conn:
        sizes = dict(conn.execute(SIZE_QUERY, {"s": database}).all())
    print(
        f"on-disk size: compact {sizes.get('feature_vector', 0) / 2**20:.1f} MiB, "
        f"EAV {sizes.get('eav_feature_value', 0) / 2**20:.1f} MiB",
        flush=True,
    )


def run(database: str) -> tuple[float, float, float]:
    """Seed, measure and return (cold, warm, eav cold) seconds."""
    url = url_for(database)
    migrate.upgrade(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    names = feature_names()
    values = synthetic_values(names)
    print(
        f"data: {N_PATIENTS} patients (+{N_FAILED} without values) x {len(ROIS)} ROIs "
        f"x {len(names)} features",
        flush=True,
    )
    start = time.perf_counter()
    extraction_id, outcome_id = seed_compact(engine, names, values)
    print(f"compact store (store_study_vectors): {time.perf_counter() - start:.1f} s", flush=True)
    # Measured before the EAV load, which would evict these pages from InnoDB's buffer pool.
    cold, warm = measure_compact(url, extraction_id, outcome_id)
    start = time.perf_counter()
    seed_eav(database, extraction_id, names, values)
    print(f"EAV store (LOAD DATA + indexes): {time.perf_counter() - start:.1f} s", flush=True)
    print_sizes(engine, database)
    engine.dispose()
    eav = run_child("eav", url, extraction_id, outcome_id)
    print(
        f"EAV cold (fresh process): {eav['seconds']:.3f} s (cpu {eav['cpu_seconds']:.3f} s); "
        f"tabular {eav['tabular_lines']} lines, chart {eav['chart_lines']} lines",
        flush=True,
    )
    return cold, warm, eav["seconds"]


def main() -> None:
    """Run the benchmark in a throwaway database and print the summary line last."""
    database = f"qi2_bench_{uuid.uuid4().hex[:8]}"
    admin(f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        cold, warm, eav = run(database)
    finally:
        admin(f"DROP DATABASE IF EXISTS {database}")
    print(
        f"feature_table: cold_s={cold:.3f} warm_s={warm:.3f} "
        f"eav_cold_s={eav:.3f} speedup={eav / cold:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("KIND", "URL", "EXTRACTION", "OUTCOME"))
    args = parser.parse_args()
    if args.child:
        kind, url, extraction, outcome = args.child
        child(kind, url, int(extraction), int(outcome))
    else:
        main()
