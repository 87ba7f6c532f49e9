"""Feature tables for the frontend: the two feature-details CSVs, their multipart body, the ZIP.

Pure functions over a `FeatureMatrix` (numpy + pandas, no database). The byte layouts follow the
API contract §3.1 and §3.2; the rounded CSVs are written by a vectorised formatter that produces
the same bytes as `DataFrame.round(3).to_csv()` at a fraction of its cost.
"""

from __future__ import annotations

import io
import logging
import math
import re
import unicodedata
import uuid
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FEATURE_ID_SEPARATOR = "\u2011"  # NON-BREAKING HYPHEN, as the frontend's FeatureID regex expects
KEY_COLUMNS = ("PatientID", "Modality", "ROI")
# "Undefined" is the placeholder the backend writes for empty labels; "nan" is what pandas wrote.
MISSING_LABELS = frozenset({"", "undefined", "nan"})

# The rounded CSVs are built as fixed-width, NUL-padded cells `,<text>` that are squeezed once a
# chunk of rows is complete. Below this |value * 1000| the 3-decimal text is the shortest repr.
_FAST_LIMIT = 1e15
_CHUNK_CELLS = 1 << 15  # cells formatted at a time: temporaries stay in cache


def feature_id(modality: str, roi: str, name: str) -> str:
    """Return the frontend's feature ID `<Modality>‑<ROI>‑<name>` (U+2011 separators)."""
    return f"{modality}{FEATURE_ID_SEPARATOR}{roi}{FEATURE_ID_SEPARATOR}{name}"


def parse_feature_id(value: str) -> tuple[str, str, str] | None:
    """Split a radiomics feature ID into (modality, roi, name); None for clinical (bare) IDs."""
    modality, sep, rest = value.partition(FEATURE_ID_SEPARATOR)
    roi, sep2, name = rest.rpartition(FEATURE_ID_SEPARATOR)
    if not sep or not sep2 or not modality or not name:
        return None
    return modality, roi, name


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """Wide float64 feature table: one row per (patient, modality, ROI), one column per name.

    `values[i, j]` is NaN when row i has no value for `names[j]`. `patients_without_values` are
    patients of the extraction whose tasks stored nothing; the tables pad them.
    """

    patient_ids: list[str]
    modalities: list[str]
    rois: list[str]
    names: list[str]
    values: np.ndarray
    study_uids: list[str] = field(default_factory=list)
    patients_without_values: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check shapes and that each (patient, modality, ROI) appears once."""
        n = len(self.patient_ids)
        if len(self.modalities) != n or len(self.rois) != n:
            raise ValueError("patient_ids, modalities and rois must have the same length")
        if self.values.shape != (n, len(self.names)):
            raise ValueError(
                f"values has shape {self.values.shape}, expected {(n, len(self.names))}"
            )
        if len(set(zip(self.patient_ids, self.modalities, self.rois, strict=True))) != n:
            raise ValueError("duplicate (patient, modality, ROI) rows")

    @property
    def groups(self) -> list[tuple[str, str]]:
        """Return the distinct (modality, ROI) pairs, sorted."""
        return sorted(set(zip(self.modalities, self.rois, strict=True)))

    def to_frame(self) -> pd.DataFrame:
        """Return the matrix as a DataFrame `PatientID, Modality, ROI, <names…>`."""
        keys = pd.DataFrame(
            {"PatientID": self.patient_ids, "Modality": self.modalities, "ROI": self.rois}
        )
        return pd.concat([keys, pd.DataFrame(self.values, columns=self.names)], axis=1)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, **extra: Any) -> FeatureMatrix:
        """Build a matrix from a DataFrame with the key columns and one column per feature."""
        names = sorted(str(c) for c in frame.columns if c not in KEY_COLUMNS)
        values = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
        return cls(
            patient_ids=[str(p) for p in frame["PatientID"]],
            modalities=[str(m) for m in frame["Modality"]],
            rois=[str(r) for r in frame["ROI"]],
            names=names,
            values=np.ascontiguousarray(values),
            **extra,
        )


@dataclass(frozen=True)
class Outcome:
    """An outcome to rank features against: its type and each patient's label content."""

    label_type: str  # "Classification" or "Survival"
    labels: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_category(cls, category: Any) -> Outcome:
        """Build from a LabelCategory (anything with `label_type` and `labels`)."""
        return cls(
            label_type=category.label_type,
            labels={label.patient_id: label.label_content or {} for label in category.labels},
        )

    @property
    def target(self) -> str:
        """Return the label field ranked against: `Event` for survival, else `Outcome`."""
        return "Event" if self.label_type.lower() == "survival" else "Outcome"

    def usable_targets(self) -> dict[str, str]:
        """Return patient → target value, without missing values and "Undefined" placeholders."""
        usable = {}
        for patient_id, content in self.labels.items():
            value = content.get(self.target)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            text = str(value).strip()
            if text.lower() not in MISSING_LABELS:
                usable[patient_id] = text
        return usable


# --- rows and padding -------------------------------------------------------------------------


def _padding_patients(matrix: FeatureMatrix, extra_patients: Iterable[str]) -> list[str]:
    """Return the patients to pad: without values in the extraction, or only in the album."""
    present = set(matrix.patient_ids)
    wanted = set(matrix.patients_without_values) | {str(p) for p in extra_patients}
    return sorted(wanted - present)


def _row_plan(matrix: FeatureMatrix, padding: Sequence[str]) -> list[tuple[str, str, str, int]]:
    """Return the table rows (patient, modality, ROI, matrix row or -1 for padding), sorted."""
    rows = [
        (p, m, r, i)
        for i, (p, m, r) in enumerate(
            zip(matrix.patient_ids, matrix.modalities, matrix.rois, strict=True)
        )
    ]
    rows += [(p, m, r, -1) for p in padding for m, r in matrix.groups]
    rows.sort()
    return rows


# --- fast CSV formatting ----------------------------------------------------------------------

_QUOTE_NEEDED = re.compile(r'[,"\r\n]')


def _csv_field(text: str) -> str:
    """Quote a text field the way Python's csv module does with QUOTE_MINIMAL (pandas' default)."""
    if _QUOTE_NEEDED.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _words(texts: Sequence[str]) -> np.ndarray:
    """Pack short ASCII texts, NUL-padded, into 4-byte words (native order)."""
    raw = np.zeros((len(texts), 4), np.uint8)
    for i, text in enumerate(texts):
        raw[i, : len(text)] = np.frombuffer(text.encode(), np.uint8)
    return raw.view(np.uint32).ravel()  # viewed back as bytes, the text reappears


# Integer part in groups of 4 digits, indexed by kind * 10000 + group: kind 0 = above the
# leading group (blank), 1 = the leading group (no zero padding), 2 = below it (zero-padded).
_GROUPS = _words([""] * 10000 + [str(g) for g in range(10000)] + [f"{g:04d}" for g in range(10000)])
# Comma, sign and an integer part below 100 in one word, indexed by negative * 100 + integer.
_SMALL_HEADS = _words([f",{g}" for g in range(100)] + [f",-{g}" for g in range(100)])
# ".ddd" with trailing zeros stripped but one digit kept, as repr writes it ("10.0", "1.25").
_FRACTIONS = _words(["." + (f"{g:03d}".rstrip("0") or "0") for g in range(1000)])
_COMMA, _COMMA_MINUS = _words([",", ",-"])


def _integer_words(whole: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Return comma, sign and digits of integral floats (< 1e12) as NUL-padded 4-byte words.

    Float arithmetic is exact here (integers far below 2**53) and faster than int64 division.
    """
    largest = whole.max() if whole.size else 0.0
    if largest < 100:
        return _SMALL_HEADS[(whole + negative * 100.0).astype(np.intp)][:, None]
    n_groups = 1 + int(largest >= 1e4) + int(largest >= 1e8)
    words = np.empty((whole.size, 1 + n_groups), np.uint32)
    words[:, 0] = np.where(negative, _COMMA_MINUS, _COMMA)
    top = (whole >= 1e4).astype(np.float64) + (whole >= 1e8)  # index of the leading group
    for s in range(n_groups):  # s = 0 for the last 4 digits, 1 for the 4 before, …
        above = np.floor(whole / 10.0 ** (4 * s)) if s else whole
        group = above - np.floor(above / 1e4) * 1e4
        kind = (top >= s).astype(np.float64) + (top > s)
        words[:, n_groups - s] = _GROUPS[(kind * 1e4 + group).astype(np.intp)]
    return words


def _format_rounded(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Format values rounded to 3 decimals as NUL-padded cells `,<text>`; return (cells, width).

    A cell holds exactly what `DataFrame.round(3).to_csv()` writes: numpy's round is
    rint(x * 1000) / 1000, and below 1e12 the shortest repr of that float is the 3-decimal
    decimal with trailing zeros stripped. Larger values and infinities go through numpy's own
    float-to-string (the one pandas uses); NaN gives an empty cell. A cell is a row of 4-byte
    words (comma and sign, integer digits, fraction) built from lookup tables.
    """
    flat = values.ravel()
    scaled = np.multiply(flat, 1000.0)
    np.rint(scaled, out=scaled)
    magnitude = np.abs(scaled)
    fast = magnitude < _FAST_LIMIT
    negative = np.signbit(scaled)
    slow = np.empty(0, np.intp)
    slow_width = 0
    all_fast = bool(fast.all())
    if not all_fast:
        magnitude[~fast] = 0.0
        negative &= fast
        slow = np.flatnonzero(~fast & ~np.isnan(flat))
    if slow.size:
        slow_text = (scaled[slow] / 1000.0).astype(str)  # numpy's float repr, as pandas writes
        slow_width = int(np.strings.str_len(slow_text).max())
        slow_bytes = slow_text.astype(f"S{slow_width}").view(np.uint8).reshape(slow.size, -1)
    # Exact in float64: magnitude is an integer below 1e15, far from any rounding trouble.
    whole = np.floor(magnitude / 1000.0)
    frac = (magnitude - whole * 1000.0).astype(np.intp)
    head = _integer_words(whole, negative)
    n_words = max(head.shape[1] + 1, -(-(1 + slow_width) // 4))
    words = np.zeros((flat.size, n_words), np.uint32)
    words[:, : head.shape[1]] = head
    words[:, head.shape[1]] = _FRACTIONS[frac]
    if not all_fast:
        words[~fast] = 0
        words[~fast, 0] = _COMMA
    width = 4 * n_words
    cells = words.view(np.uint8).reshape(flat.size, width)
    if slow.size:
        cells[slow, 1 : 1 + slow_width] = slow_bytes
    return cells, width


def _format_block(values: np.ndarray) -> list[bytes]:
    """Return each row of a 2-D array as its CSV cells (`,v1,v2,…`), rounded to 3 decimals."""
    n_rows, n_cols = values.shape
    if not n_cols:
        return [b""] * n_rows
    out: list[bytes] = []
    step = max(1, _CHUNK_CELLS // n_cols)
    for start in range(0, n_rows, step):
        chunk = values[start : start + step]
        cells, width = _format_rounded(chunk)
        raw = cells.tobytes()
        row_bytes = n_cols * width
        # bytes.translate squeezes out the NUL padding faster than any numpy compaction.
        out.extend(
            raw[i : i + row_bytes].translate(None, b"\0")
            for i in range(0, len(chunk) * row_bytes, row_bytes)
        )
    return out


def _join_csv(
    header: Sequence[str],
    prefixes: Sequence[str],
    cells: Sequence[bytes],
    suffixes: Sequence[str] | None = None,
) -> bytes:
    """Assemble a CSV: the header line, then prefix + numeric cells (+ suffix) per row."""
    parts = [",".join(_csv_field(h) for h in header).encode(), b"\n"]
    for i, prefix in enumerate(prefixes):
        parts.append(prefix.encode())
        parts.append(cells[i])
        if suffixes is not None:
            parts.append(suffixes[i].encode())
        parts.append(b"\n")
    return b"".join(parts)


# --- CSV 1: features_tabular ------------------------------------------------------------------


def tabular_csv(matrix: FeatureMatrix, *, extra_patients: Iterable[str] = ()) -> bytes:
    """Return the `features_tabular` CSV (UTF-8): one row per (patient, modality, ROI)."""
    rows = _row_plan(matrix, _padding_patients(matrix, extra_patients))
    formatted = _format_block(matrix.values)
    blank = b"," * len(matrix.names)
    prefixes = [f"{_csv_field(p)},{_csv_field(m)},{_csv_field(r)}" for p, m, r, _ in rows]
    cells = [formatted[i] if i >= 0 else blank for *_, i in rows]
    return _join_csv([*KEY_COLUMNS, *matrix.names], prefixes, cells)


# --- CSV 2: features_chart --------------------------------------------------------------------


def _zscore(block: np.ndarray) -> np.ndarray:
    """Standardise each column over its non-NaN rows with the population std (StandardScaler).

    Columns whose variance is within rounding error of zero are constant: they give 0, as
    StandardScaler does when it replaces a zero scale by 1. NaN cells stay NaN.
    """
    nan_rows, nan_cols = np.nonzero(np.isnan(block))  # usually few: handled sparsely
    count = block.shape[0] - np.bincount(nan_cols, minlength=block.shape[1])
    z = block.copy()
    z[nan_rows, nan_cols] = 0.0
    eps = np.finfo(np.float64).eps
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = z.sum(axis=0) / count
        z -= mean
        z[nan_rows, nan_cols] = 0.0
        var = np.einsum("ij,ij->j", z, z) / count
        constant = ~(var > count * eps * var + (count * mean * eps) ** 2)
        z /= np.where(constant, 1.0, np.sqrt(var))
    z[:, constant] = 0.0
    z[nan_rows, nan_cols] = np.nan
    return z


def _wide(matrix: FeatureMatrix, patients: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Return the feature IDs and a patient × feature-ID matrix; all-NaN features are dropped."""
    row_of = {p: j for j, p in enumerate(patients)}
    patient_row = np.array([row_of[p] for p in matrix.patient_ids], dtype=np.intp)
    group_of = {pair: g for g, pair in enumerate(matrix.groups)}
    group_code = np.array(
        [group_of[pair] for pair in zip(matrix.modalities, matrix.rois, strict=True)], np.intp
    )
    ids: list[str] = []
    parts = []
    for g, (modality, roi) in enumerate(matrix.groups):
        rows = np.flatnonzero(group_code == g)
        cols = np.flatnonzero(~np.isnan(matrix.values[rows]).all(axis=0))
        ids.extend(feature_id(modality, roi, matrix.names[c]) for c in cols)
        parts.append((rows, cols))
    wide = np.full((len(patients), len(ids)), np.nan)
    start = 0
    for rows, cols in parts:
        wide[patient_row[rows], start : start + cols.size] = matrix.values[np.ix_(rows, cols)]
        start += cols.size
    return ids, wide


def wide_matrix(matrix: FeatureMatrix, patients: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Return feature IDs `<Modality>‑<ROI>‑<name>` and a patient × ID matrix (NaN = missing).

    `patients` must contain every patient of the matrix; all-NaN features are left out.
    """
    return _wide(matrix, patients)


def _class_codes(values: Sequence[str]) -> np.ndarray:
    """Encode label values as class codes; numeric labels compare as numbers ("1" == "1.0")."""
    try:
        keys = np.array([float(v) for v in values])
    except ValueError:
        keys = np.array(values, dtype=str)
    _, codes = np.unique(keys, return_inverse=True)
    return codes.astype(np.int64)


def anova_f(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Return the one-way ANOVA F statistic of each column of x (samples × features).

    Same statistic as scikit-learn's `f_classif`. NaN where it is undefined (fewer than two
    classes, no residual degrees of freedom, or a constant feature); +inf when the classes are
    separated with no spread within them.
    """
    mean = x.mean(axis=0)
    return _anova_f_centred(x - mean, mean, codes)


def _anova_f_centred(centred: np.ndarray, mean: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Return F for columns already centred on their means (centring keeps the sums accurate)."""
    classes, codes = np.unique(codes, return_inverse=True)
    n, k = len(codes), len(classes)
    if k < 2 or n <= k:
        return np.full(centred.shape[1], np.nan)
    indicator = np.zeros((k, n))
    indicator[codes, np.arange(n)] = 1.0
    counts = indicator.sum(axis=1)
    eps = np.finfo(np.float64).eps
    with np.errstate(all="ignore"):
        sums = indicator @ centred
        squares = np.einsum("ij,ij->j", centred, centred)
        between = (sums * sums / counts[:, None]).sum(axis=0)
        within = np.maximum(squares - between, 0.0)
        f = (between / (k - 1)) / (within / (n - k))
        var = squares / n
        constant = ~(var > n * eps * var + (n * mean * eps) ** 2)
        # Class sums of squares cancel to rounding noise when a feature separates the classes.
        f[within <= squares * 1e-12] = np.inf
    f[constant] = np.nan
    return f


def _ranking(
    z: np.ndarray,
    patients: Sequence[str],
    has_values: set[str],
    outcome: Outcome | None,
    allowed: Collection[str] | None = None,
) -> tuple[np.ndarray | None, int]:
    """Rank features (0 = best) by univariate F against the outcome; None without usable labels.

    Only patients with a usable label and at least one value count, and only those in
    `allowed` when it is given (the training patients of a split: the test patients' labels
    must not choose features). Missing values are imputed with the feature's mean over the
    ranking patients. F does not change under z-scoring, so the z-scores serve. Ties and
    undefined F keep the table order (NaN last). Also returns how many patients ranked.
    """
    if outcome is None:
        return None, 0
    targets = outcome.usable_targets()
    if allowed is not None:
        targets = {p: v for p, v in targets.items() if p in allowed}
    labelled = [j for j, p in enumerate(patients) if p in targets and p in has_values]
    if not labelled:
        return None, 0
    x = z[labelled]
    nan_rows, nan_cols = np.nonzero(np.isnan(x))
    x[nan_rows, nan_cols] = 0.0
    count = len(labelled) - np.bincount(nan_cols, minlength=x.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=0) / count
    x -= mean
    x[nan_rows, nan_cols] = 0.0  # imputed with the mean: exactly zero once centred
    f = _anova_f_centred(x, mean, _class_codes([targets[patients[j]] for j in labelled]))
    order = np.argsort(np.where(np.isnan(f), np.inf, -f), kind="stable")
    ranking = np.empty(len(f), np.int64)
    ranking[order] = np.arange(len(f))
    return ranking, len(labelled)


@dataclass(frozen=True)
class Chart:
    """The `features_chart` CSV and how many patients its `Ranking` was computed on."""

    csv: bytes
    ranked_on: int  # 0 when there is no Ranking column


def chart(
    matrix: FeatureMatrix,
    *,
    outcome: Outcome | None = None,
    extra_patients: Iterable[str] = (),
    ranking_patients: Collection[str] | None = None,
) -> Chart:
    """Build the `features_chart` CSV: z-scores per feature ID × patient, and `Ranking`.

    `ranking_patients` limits the ranking to those patients (None: every labelled patient).
    """
    patients = sorted(set(matrix.patient_ids) | set(_padding_patients(matrix, extra_patients)))
    ids, wide = _wide(matrix, patients)
    z = _zscore(wide)
    row_has_values = ~np.isnan(matrix.values).all(axis=1)
    has_values = {p for p, ok in zip(matrix.patient_ids, row_has_values, strict=True) if ok}
    allowed = None if ranking_patients is None else set(ranking_patients)
    ranking, ranked_on = _ranking(z, patients, has_values, outcome, allowed)
    header = ["FeatureID", *patients]
    suffixes = None
    if ranking is not None:
        header.append("Ranking")
        suffixes = [f",{r}" for r in ranking.tolist()]
    body = _join_csv(header, [_csv_field(i) for i in ids], _format_block(z.T), suffixes)
    return Chart(body, ranked_on)


def chart_csv(
    matrix: FeatureMatrix,
    *,
    outcome: Outcome | None = None,
    extra_patients: Iterable[str] = (),
    ranking_patients: Collection[str] | None = None,
) -> bytes:
    """Return the `features_chart` CSV (UTF-8): z-scores per feature ID × patient, `Ranking`."""
    return chart(
        matrix,
        outcome=outcome,
        extra_patients=extra_patients,
        ranking_patients=ranking_patients,
    ).csv


# --- multipart body ---------------------------------------------------------------------------


def feature_details_multipart(tabular: str | bytes, chart: str | bytes) -> tuple[bytes, str]:
    """Return the multipart/form-data body (parts `features_tabular`, `features_chart`)."""
    parts = [
        (name, text.encode() if isinstance(text, str) else text)
        for name, text in (("features_tabular", tabular), ("features_chart", chart))
    ]
    boundary = uuid.uuid4().hex
    while any(f"--{boundary}".encode() in body for _, body in parts):
        boundary = uuid.uuid4().hex  # astronomically rare, but a clash would cut a part short
    delimiter = f"--{boundary}\r\n".encode()
    out = []
    for name, body in parts:
        out += [delimiter, f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()]
        out += [body, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


# --- ZIP download -----------------------------------------------------------------------------

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._()+@~!-]")
_UNSAFE_MEMBER = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def attachment_filename(name: str) -> str:
    """Make a name safe for `Content-Disposition: attachment; filename=<name>` (unquoted).

    Whitespace becomes `-` (as the reference did); accents are stripped, and `=`, `;`, quotes
    and any other character outside a plain ASCII set become `_`, since the frontend takes the
    name as `header.split('=')[1]`.
    """
    text = re.sub(r"\s", "-", name)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _UNSAFE_FILENAME.sub("_", text) or "download"


def _member_part(name: str, *, dashes: bool = False) -> str:
    """Path separators and control characters → `_` (no folders in the ZIP); spaces → `-` too."""
    return _UNSAFE_MEMBER.sub("_", name.replace(" ", "-") if dashes else name)


def _group_csv(matrix: FeatureMatrix, rows: Sequence[tuple[str, str, str, int]]) -> str:
    """Return one (modality, ROI) group as `to_csv(index=False)`, at full precision."""
    index = np.array([i for *_, i in rows], dtype=np.int64)
    values = np.full((len(rows), len(matrix.names)), np.nan)
    values[index >= 0] = matrix.values[index[index >= 0]]
    keys = pd.DataFrame({c: [row[k] for row in rows] for k, c in enumerate(KEY_COLUMNS)})
    frame = pd.concat([keys, pd.DataFrame(values, columns=matrix.names)], axis=1)
    return frame.to_csv(index=False)


def features_zip(
    matrix: FeatureMatrix,
    album_name: str,
    collection_name: str | None = None,
    *,
    extra_patients: Iterable[str] = (),
) -> tuple[bytes, str]:
    """Return the ZIP of one CSV per (modality, ROI) group, and its download file name."""
    stem = f"features_album_{_member_part(album_name, dashes=True)}"
    if collection_name is not None:
        stem += f"_collection_{_member_part(collection_name, dashes=True)}"
    rows = _row_plan(matrix, _padding_patients(matrix, extra_patients))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for modality, roi in matrix.groups:
            group_rows = [row for row in rows if row[1] == modality and row[2] == roi]
            text = _group_csv(matrix, group_rows)
            # The reference renamed every occurrence in the text, headers and cells alike.
            text = text.replace("firstorder", "SUV" if modality == "PT" else "intensity")
            member = f"{stem}_{_member_part(modality)}-{_member_part(roi)}.csv"
            archive.writestr(member, text)
    suffix = f"_{collection_name.replace(' ', '-')}" if collection_name is not None else ""
    filename = attachment_filename(f"features_album_{album_name.replace(' ', '-')}{suffix}.zip")
    return buffer.getvalue(), filename
