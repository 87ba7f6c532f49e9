"""Store and load feature vectors: one packed float64 row per (study task, modality, ROI).

Writers replace a task's vectors as a whole, so a re-run or a re-delivered task never leaves
duplicates to be averaged. Readers fetch an extraction's vectors in one query and decode them
with numpy into a `FeatureMatrix`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import sqlalchemy.orm as so

from shared.errors import InvalidInput, NotFound
from shared.extractions.models import ExtractionTask, FeatureNameSet, FeatureVector
from shared.features.table import FeatureMatrix, Outcome, feature_id, parse_feature_id
from shared.labels.models import Label, LabelCategory

log = logging.getLogger(__name__)

_DTYPE = np.dtype("<f8")  # the stored byte layout, whatever the host's byte order


@dataclass(frozen=True)
class VectorIn:
    """The features of one study for one (modality, ROI): names and their values."""

    modality: str
    roi: str
    names: Sequence[str]
    values: npt.ArrayLike


def name_digest(names: Sequence[str]) -> str:
    """Return the sha256 hex digest that identifies an ordered list of feature names."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _checked(vector: VectorIn) -> tuple[str, str, tuple[str, ...], np.ndarray]:
    """Validate one vector; return (modality, roi, names, float64 values)."""
    names = tuple(vector.names)
    values = np.asarray(vector.values, dtype=np.float64)
    where = f"{vector.modality}/{vector.roi}"
    if not vector.modality or not vector.roi:
        raise InvalidInput("A feature vector needs a modality and an ROI")
    if not names:
        raise InvalidInput(f"No feature names for {where}")
    if values.shape != (len(names),):
        raise InvalidInput(f"{where}: {len(names)} names but values of shape {values.shape}")
    if len(set(names)) != len(names):
        raise InvalidInput(f"{where}: duplicate feature names")
    if any(not name or "\n" in name for name in names):
        raise InvalidInput(f"{where}: feature names must be non-empty single lines")
    # Stored sorted: one name set per distinct list whatever the extractor's order, and an
    # extraction whose studies share it decodes without reordering a single column.
    order = sorted(range(len(names)), key=names.__getitem__)
    return vector.modality, vector.roi, tuple(names[i] for i in order), values[order]


def _lock_task(session: so.Session, *, extraction_id: int, task_id: int) -> None:
    """Lock the task row so that two deliveries of one task store one after the other."""
    task = ExtractionTask.__table__
    owner = session.scalar(
        sa.select(task.c.feature_extraction_id).where(task.c.id == task_id).with_for_update()
    )
    if owner is None:
        raise NotFound("Extraction task not found")
    if owner != extraction_id:
        raise InvalidInput(f"Task {task_id} does not belong to extraction {extraction_id}")


def _insert_name_set(session: so.Session, digest: str, names: Sequence[str]) -> int:
    """Insert a name set; if a concurrent worker inserted it first, return that row's id."""
    table = FeatureNameSet.__table__
    try:
        with session.begin_nested():
            result = session.execute(sa.insert(table).values(digest=digest, names="\n".join(names)))
            return int(result.inserted_primary_key[0])
    except sa_exc.IntegrityError:
        log.debug("name set %s was inserted concurrently; reusing it", digest[:12])
    # A locking read sees the other transaction's committed row, which a plain read in an
    # older REPEATABLE READ snapshot would not.
    found = session.scalar(
        sa.select(table.c.id).where(table.c.digest == digest).with_for_update(read=True)
    )
    if found is None:
        raise RuntimeError(f"name set {digest} neither insertable nor readable")
    return int(found)


def name_set_ids(session: so.Session, name_lists: Sequence[Sequence[str]]) -> list[int]:
    """Return the FeatureNameSet id of each name list, creating the missing ones."""
    digests = [name_digest(names) for names in name_lists]
    wanted = dict(zip(digests, name_lists, strict=True))
    table = FeatureNameSet.__table__
    found: dict[str, int] = {
        row.digest: row.id
        for row in session.execute(
            sa.select(table.c.digest, table.c.id).where(table.c.digest.in_(list(wanted)))
        )
    }
    # Sorted, so that concurrent workers needing the same new sets wait instead of deadlocking.
    for digest in sorted(set(wanted) - set(found)):
        found[digest] = _insert_name_set(session, digest, wanted[digest])
    return [found[d] for d in digests]


def store_study_vectors(
    session: so.Session, *, extraction_id: int, task_id: int, vectors: Sequence[VectorIn]
) -> None:
    """Replace everything a task stored with these vectors (idempotent; never commits).

    Raises NotFound when the task is gone (its extraction was cancelled) and InvalidInput for
    malformed vectors or a task of another extraction.
    """
    checked = [_checked(v) for v in vectors]
    keys = [(modality, roi) for modality, roi, *_ in checked]
    if len(set(keys)) != len(keys):
        raise InvalidInput("Several vectors for the same (modality, ROI) in one study")
    _lock_task(session, extraction_id=extraction_id, task_id=task_id)
    ids = name_set_ids(session, [names for _, _, names, _ in checked])
    delete_task_vectors(session, task_id=task_id)
    if checked:
        session.execute(
            sa.insert(FeatureVector.__table__),
            [
                {
                    "feature_extraction_id": extraction_id,
                    "feature_extraction_task_id": task_id,
                    "modality": modality,
                    "roi": roi,
                    "name_set_id": name_set_id,
                    "values": values.astype(_DTYPE, copy=False).tobytes(),
                }
                for (modality, roi, _, values), name_set_id in zip(checked, ids, strict=True)
            ],
        )
    log.info("stored %d feature vectors for task %s", len(checked), task_id)


def delete_task_vectors(session: so.Session, *, task_id: int) -> int:
    """Delete the vectors a task stored; return how many there were (never commits)."""
    table = FeatureVector.__table__
    result = session.execute(sa.delete(table).where(table.c.feature_extraction_task_id == task_id))
    return int(result.rowcount)


# --- reading ----------------------------------------------------------------------------------


def _selection(feature_ids: Iterable[str] | None) -> dict[tuple[str, str], set[str]] | None:
    """Group radiomics feature IDs by (modality, ROI); clinical (bare) IDs are skipped."""
    if feature_ids is None:
        return None
    selected: dict[tuple[str, str], set[str]] = defaultdict(set)
    for fid in feature_ids:
        parsed = parse_feature_id(fid)
        if parsed is not None:
            selected[parsed[:2]].add(parsed[2])
    return dict(selected)


def _fetch(
    session: so.Session, extraction_id: int, pairs: Iterable[tuple[str, str]] | None
) -> list[Any]:
    """Fetch every task of the extraction with its vectors (none for tasks without values)."""
    task, vector = ExtractionTask.__table__, FeatureVector.__table__
    on = vector.c.feature_extraction_task_id == task.c.id
    if pairs is not None:
        # In the join condition, so that tasks without selected vectors still come back.
        on = on & sa.tuple_(vector.c.modality, vector.c.roi).in_(list(pairs))
    query = (
        sa.select(
            task.c.id,
            task.c.study_uid,
            task.c.patient_id,
            vector.c.modality,
            vector.c.roi,
            vector.c.name_set_id,
            vector.c["values"].label("blob"),
        )
        .select_from(task.outerjoin(vector, on))
        .where(task.c.feature_extraction_id == extraction_id)
        .order_by(task.c.id)
    )
    return list(session.execute(query))


def _pick_tasks(rows: Sequence[Any], warnings: list[str]) -> tuple[dict[str, int], list[str]]:
    """Choose one task per patient; return (patient → task id, patients without values).

    Rule: when several studies of one patient have values, the most recently created task
    (highest id) wins and the others are reported, never averaged. A study with values but no
    PatientID stands for its own patient under its study UID; one with neither is not padded
    (the caller may pad the album's patients). Both are reported.
    """
    tasks_of: dict[str, list[int]] = defaultdict(list)
    study_of: dict[int, tuple[str, str | None]] = {}
    with_values: set[int] = set()
    for row in rows:
        study_of.setdefault(row.id, (row.study_uid, row.patient_id))
        if row.modality is not None:
            with_values.add(row.id)
    for task_id, (study_uid, patient_id) in study_of.items():
        if patient_id:
            tasks_of[patient_id].append(task_id)
        elif task_id in with_values:
            warnings.append(f"Study {study_uid} has no PatientID; its study UID is used")
            tasks_of[study_uid].append(task_id)
        else:
            warnings.append(f"Study {study_uid} has neither values nor a PatientID; not padded")
    chosen: dict[str, int] = {}
    for patient, tasks in tasks_of.items():
        candidates = sorted(t for t in tasks if t in with_values)
        if not candidates:
            continue
        chosen[patient] = candidates[-1]
        if len(candidates) > 1:
            ignored = ", ".join(study_of[t][0] for t in candidates[:-1])
            warnings.append(
                f"Patient {patient} has {len(candidates)} studies with features; using study "
                f"{study_of[candidates[-1]][0]} (the latest task) and ignoring {ignored}"
            )
    return chosen, sorted(set(tasks_of) - set(chosen))


def feature_ids(session: so.Session, *, extraction_id: int) -> set[str]:
    """Return every radiomics feature ID the extraction holds values for."""
    vector = FeatureVector.__table__
    rows = list(
        session.execute(
            sa.select(vector.c.modality, vector.c.roi, vector.c.name_set_id)
            .where(vector.c.feature_extraction_id == extraction_id)
            .distinct()
        )
    )
    names = _name_sets(session, {row.name_set_id for row in rows})
    return {
        feature_id(row.modality, row.roi, name) for row in rows for name in names[row.name_set_id]
    }


def _name_sets(session: so.Session, ids: Iterable[int]) -> dict[int, list[str]]:
    """Return the names of each name set id."""
    table = FeatureNameSet.__table__
    query = sa.select(table.c.id, table.c.names).where(table.c.id.in_(sorted(set(ids))))
    return {row.id: row.names.split("\n") for row in session.execute(query)}


def _decode(
    rows: Sequence[Any],
    names_of: dict[int, list[str]],
    selection: dict[tuple[str, str], set[str]] | None,
) -> tuple[list[str], np.ndarray]:
    """Decode the vectors into one (rows × sorted union of names) float64 array, NaN = missing."""
    union = set().union(*names_of.values())
    if selection is not None:
        union &= set().union(*selection.values())
    names = sorted(union)
    column = {name: j for j, name in enumerate(names)}
    by_set: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_set[row.name_set_id].append(i)
    out: np.ndarray | None = None
    for set_id, positions in by_set.items():
        set_names = names_of[set_id]
        # A bytearray keeps the decoded array writable without another copy.
        blob = bytearray().join(rows[i].blob for i in positions)
        if len(blob) != 8 * len(set_names) * len(positions):
            raise ValueError(f"feature vectors of name set {set_id} do not match its length")
        block = np.frombuffer(blob, dtype=_DTYPE).reshape(len(positions), len(set_names))
        if len(by_set) == 1 and set_names == names:
            out = block.astype(np.float64, copy=False)  # the common case: nothing to scatter
            break
        if out is None:
            out = np.full((len(rows), len(names)), np.nan)
        src = np.array([k for k, n in enumerate(set_names) if n in column], dtype=np.int64)
        dst = np.array([column[set_names[k]] for k in src], dtype=np.int64)
        out[np.ix_(positions, dst)] = block[:, src]
    if out is None:
        out = np.full((len(rows), len(names)), np.nan)
    if selection is not None:
        _mask_unselected(rows, names, out, selection)
    return names, out


def _mask_unselected(
    rows: Sequence[Any],
    names: list[str],
    out: np.ndarray,
    selection: dict[tuple[str, str], set[str]],
) -> None:
    """Blank the cells of names a collection did not select for the row's (modality, ROI)."""
    for pair, chosen in selection.items():
        positions = [i for i, row in enumerate(rows) if (row.modality, row.roi) == pair]
        blanks = [j for j, name in enumerate(names) if name not in chosen]
        if positions and blanks:
            out[np.ix_(positions, blanks)] = np.nan


def load_feature_matrix(
    session: so.Session, *, extraction_id: int, feature_ids: Iterable[str] | None = None
) -> FeatureMatrix:
    """Load an extraction's features as a FeatureMatrix, optionally only some feature IDs.

    Rows are sorted by (patient, modality, ROI). One study per patient is used (see
    `_pick_tasks`); the matrix's `warnings` list what was set aside.
    """
    selection = _selection(feature_ids)
    rows = _fetch(session, extraction_id, None if selection is None else list(selection))
    warnings: list[str] = []
    chosen, without_values = _pick_tasks(rows, warnings)
    patient_of = {task_id: patient for patient, task_id in chosen.items()}
    kept = sorted(
        (row for row in rows if row.modality is not None and row.id in patient_of),
        key=lambda row: (patient_of[row.id], row.modality, row.roi),
    )
    names, values = _decode(kept, _name_sets(session, {r.name_set_id for r in kept}), selection)
    if warnings:
        log.warning("extraction %s: %d feature warnings", extraction_id, len(warnings))
    return FeatureMatrix(
        patient_ids=[patient_of[row.id] for row in kept],
        modalities=[row.modality for row in kept],
        rois=[row.roi for row in kept],
        names=names,
        values=values,
        study_uids=[row.study_uid for row in kept],
        patients_without_values=without_values,
        warnings=warnings,
    )


def load_outcome(session: so.Session, *, label_category_id: int) -> Outcome | None:
    """Load an outcome's type and labels for the ranking; None if the outcome is gone."""
    category, label = LabelCategory.__table__, Label.__table__
    label_type = session.scalar(
        sa.select(category.c.label_type).where(category.c.id == label_category_id)
    )
    if label_type is None:
        return None
    rows = session.execute(
        sa.select(label.c.patient_id, label.c.label_content).where(
            label.c.label_category_id == label_category_id
        )
    )
    return Outcome(label_type, {row.patient_id: row.label_content or {} for row in rows})
