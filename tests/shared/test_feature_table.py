"""Feature tables: CSV bytes against pandas, z-scores, ranking, multipart layout, ZIP download."""

from __future__ import annotations

import email.parser
import email.policy
import io
import re
import zipfile
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from shared.features import service as feature_service
from shared.features import table
from shared.features.table import FeatureMatrix, Outcome

NBH = "\u2011"


def matrix_of(rows: list[tuple[str, str, str, dict[str, float]]], **extra) -> FeatureMatrix:
    """Build a matrix from (patient, modality, roi, {name: value}) rows."""
    frame = pd.DataFrame(
        [{"PatientID": p, "Modality": m, "ROI": r, **values} for p, m, r, values in rows]
    )
    return FeatureMatrix.from_frame(frame, **extra)


def random_matrix(rng: np.random.Generator, n_patients: int, n_names: int) -> FeatureMatrix:
    """Two (modality, ROI) groups of wildly scaled values with some NaN; PT lacks one feature."""
    names = sorted(f"original_glcm_F{j:03d}" for j in range(n_names))
    scale = 10.0 ** rng.uniform(-4, 13, n_names)
    rows = []
    for p in range(n_patients):
        for modality in ("CT", "PT"):
            values = rng.normal(0, 1, n_names) * scale
            values[rng.random(n_names) < 0.05] = np.nan
            if modality == "PT":
                values[0] = np.nan
            rows.append((f"P{p:03d}", modality, "GTV_T", dict(zip(names, values, strict=True))))
    return matrix_of(rows)


def parse_csv(data: bytes) -> pd.DataFrame:
    """Read a CSV as strings, keeping empty cells as ''."""
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


# --- feature IDs and the matrix ---------------------------------------------------------------


def test_feature_id_uses_non_breaking_hyphens_and_parses_back():
    fid = table.feature_id("CT", "GTV-T 1", "original_firstorder_Mean")
    assert fid == f"CT{NBH}GTV-T 1{NBH}original_firstorder_Mean"
    assert table.parse_feature_id(fid) == ("CT", "GTV-T 1", "original_firstorder_Mean")
    assert table.parse_feature_id("Age") is None  # clinical features are bare names


def test_matrix_rejects_duplicate_rows():
    with pytest.raises(ValueError, match="duplicate"):
        matrix_of([("P1", "CT", "GTV", {"a": 1.0}), ("P1", "CT", "GTV", {"a": 2.0})])


# --- the rounded-CSV formatter ------------------------------------------------------------------


EDGE_VALUES = [
    0.0, -0.0, -0.0004, 0.0004, 0.0005, -0.0005, 0.0015, 0.0025, 2.675, 1.0005, 0.1 + 0.2,
    1e-3, 9.9995, 99.9995, 12345.6785, 999999999999.9994, 999999999999.9995, 1e12, -1e12,
    123456789012.3456, 1e15, 1e16, -1.5e17, 1e300, -1e-300, 5e-324, np.inf, -np.inf, np.nan,
]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tabular_csv_is_byte_identical_to_pandas(seed):
    rng = np.random.default_rng(seed)
    matrix = random_matrix(rng, 40, 30)
    matrix.values[0, : min(30, len(EDGE_VALUES))] = EDGE_VALUES[:30]
    matrix.values[1] = np.round(rng.uniform(-1e4, 1e4, 30) * 1000) / 1000 + 0.0005  # ties
    expected = matrix.to_frame().sort_values(["PatientID", "Modality", "ROI"])
    assert table.tabular_csv(matrix) == expected.round(3).to_csv(index=False).encode()


def test_formatter_matches_pandas_on_boundaries_and_magnitudes():
    rng = np.random.default_rng(7)
    k = rng.integers(-(10**9), 10**9, 4000)
    candidates = np.concatenate(
        [
            (k + 0.5) / 1000,  # exact .0005 ties, resolved like numpy's round
            (k + 0.5) / 1000 * (1 + 1e-15),
            rng.lognormal(0, 8, 4000) * rng.choice([-1, 1], 4000),
            rng.uniform(5e11, 5e13, 4000),
            np.array(EDGE_VALUES * 10),
        ]
    )
    values = candidates[: (candidates.size // 16) * 16].reshape(-1, 16)
    frame = pd.DataFrame(values, columns=[f"c{j:02d}" for j in range(16)])
    expected = frame.round(3).to_csv(index=False, header=False).encode().split(b"\n")[:-1]
    got = [cells[1:] for cells in table._format_block(values)]
    assert got == expected


def test_text_fields_are_quoted_like_pandas():
    odd = ["a,b", 'say "hi"', "multi\nline", "plain", "Zürich", "tab\tok", " lead"]
    rows = [(p, "CT", "GTV, left", {"x,y": float(i), 'q"': 1.5}) for i, p in enumerate(odd)]
    matrix = matrix_of(rows)
    expected = matrix.to_frame().sort_values(["PatientID", "Modality", "ROI"])
    assert table.tabular_csv(matrix) == expected.round(3).to_csv(index=False).encode()


# --- CSV 1: features_tabular ------------------------------------------------------------------


def test_tabular_rounds_pads_and_sorts():
    matrix = matrix_of(
        [
            ("P2", "PT", "GTV_T", {"original_firstorder_Mean": 2.0, "original_shape_Volume": 3.0}),
            (
                "P1",
                "CT",
                "GTV_T",
                {"original_firstorder_Mean": 1.2344, "original_shape_Volume": 10},
            ),
            ("P2", "CT", "GTV_T", {"original_firstorder_Mean": -0.0001}),
        ],
        patients_without_values=["P3"],
    )
    lines = table.tabular_csv(matrix, extra_patients=["P0", "P1"]).decode().splitlines()
    assert lines == [
        "PatientID,Modality,ROI,original_firstorder_Mean,original_shape_Volume",
        "P0,CT,GTV_T,,",
        "P0,PT,GTV_T,,",
        "P1,CT,GTV_T,1.234,10.0",
        "P2,CT,GTV_T,-0.0,",  # what pandas writes for round(-0.0001, 3)
        "P2,PT,GTV_T,2.0,3.0",
        "P3,CT,GTV_T,,",
        "P3,PT,GTV_T,,",
    ]


def test_rows_without_feature_columns():
    matrix = FeatureMatrix(["P1"], ["CT"], ["GTV"], [], np.empty((1, 0)))
    assert table.tabular_csv(matrix) == b"PatientID,Modality,ROI\nP1,CT,GTV\n"
    assert table.chart_csv(matrix) == b"FeatureID,P1\n"


def test_tabular_of_an_empty_extraction_is_just_the_header():
    matrix = FeatureMatrix([], [], [], [], np.empty((0, 0)), patients_without_values=["P1"])
    assert table.tabular_csv(matrix) == b"PatientID,Modality,ROI\n"


# --- CSV 2: features_chart --------------------------------------------------------------------


def test_chart_zscores_by_hand():
    matrix = matrix_of(
        [
            (
                "P1",
                "CT",
                "GTV",
                {"original_a": 1.0, "original_const": 5.0, "original_gone": np.nan},
            ),
            (
                "P2",
                "CT",
                "GTV",
                {"original_a": 2.0, "original_const": 5.0, "original_gone": np.nan},
            ),
            (
                "P3",
                "CT",
                "GTV",
                {"original_a": 3.0, "original_const": 5.0, "original_gone": np.nan},
            ),
            ("P4", "CT", "GTV", {"original_a": np.nan, "original_const": 5.0}),
            ("P1", "PT", "GTV", {"original_gone": 7.0}),
        ],
        patients_without_values=["P5"],
    )
    chart = parse_csv(table.chart_csv(matrix))
    assert list(chart.columns) == ["FeatureID", "P1", "P2", "P3", "P4", "P5"]
    rows = {r["FeatureID"]: r for r in chart.to_dict("records")}
    # Only features with a value in their (modality, ROI) group survive.
    assert list(rows) == [
        f"CT{NBH}GTV{NBH}original_a",
        f"CT{NBH}GTV{NBH}original_const",
        f"PT{NBH}GTV{NBH}original_gone",
    ]
    std = np.sqrt(((np.array([1, 2, 3]) - 2.0) ** 2).mean())  # population std, as StandardScaler
    z = f"{round(1 / std, 3)}"
    assert [rows[f"CT{NBH}GTV{NBH}original_a"][p] for p in chart.columns[1:]] == [
        f"-{z}",
        "0.0",
        z,
        "",
        "",
    ]
    assert [rows[f"CT{NBH}GTV{NBH}original_const"][p] for p in chart.columns[1:]] == [
        "0.0",
        "0.0",
        "0.0",
        "0.0",
        "",
    ]
    assert rows[f"PT{NBH}GTV{NBH}original_gone"]["P1"] == "0.0"
    assert "Ranking" not in chart.columns


def test_chart_matches_a_pandas_reference():
    rng = np.random.default_rng(3)
    matrix = random_matrix(rng, 25, 12)
    frame = matrix.to_frame()
    parts = []
    for (modality, roi), group in frame.groupby(["Modality", "ROI"]):
        part = (
            group.drop(columns=["Modality", "ROI"]).set_index("PatientID").dropna(axis=1, how="all")
        )
        part.columns = [table.feature_id(modality, roi, c) for c in part.columns]
        parts.append(part)
    wide = pd.concat(parts, axis=1).sort_index()
    z = (wide - wide.mean()) / wide.std(ddof=0)
    expected = z.T.round(3).to_csv(index_label="FeatureID").encode()
    assert table.chart_csv(matrix) == expected


def classification_case() -> tuple[FeatureMatrix, dict[str, dict[str, str]]]:
    """Feature `sep` separates the labelled classes; `noise` does not; Undefined rows are wild."""
    rng = np.random.default_rng(11)
    rows, labels = [], {}
    for i in range(30):
        cls = i % 2
        rows.append((f"P{i:02d}", "CT", "GTV", {
            "original_noise": float(rng.normal()),
            "original_sep": cls * 10 + float(rng.normal(0, 0.1)),
            "original_flat": 1.0,
        }))  # fmt: skip
        labels[f"P{i:02d}"] = {"Outcome": str(cls)}
    # If "Undefined"/"" were a class, `noise` would separate it perfectly from the others.
    for i in range(30, 45):
        rows.append((f"P{i:02d}", "CT", "GTV", {
            "original_noise": 1000.0 + i, "original_sep": 5.0, "original_flat": 1.0,
        }))  # fmt: skip
        labels[f"P{i:02d}"] = {"Outcome": "Undefined" if i % 2 else ""}
    return matrix_of(rows), labels


def test_ranking_puts_the_separating_feature_first_and_ignores_undefined_labels():
    matrix, labels = classification_case()
    chart = parse_csv(table.chart_csv(matrix, outcome=Outcome("Classification", labels)))
    assert chart.columns[-1] == "Ranking"
    ranking = dict(zip(chart["FeatureID"], chart["Ranking"], strict=True))
    assert ranking == {
        f"CT{NBH}GTV{NBH}original_flat": "2",  # constant: undefined F, ranked last
        f"CT{NBH}GTV{NBH}original_noise": "1",
        f"CT{NBH}GTV{NBH}original_sep": "0",
    }


def test_ranking_needs_a_usable_label():
    matrix, labels = classification_case()
    undefined = {p: {"Outcome": "Undefined"} for p in labels}
    assert b"Ranking" not in table.chart_csv(matrix, outcome=Outcome("Classification", undefined))
    only_one = {"P00": {"Outcome": "1"}}
    chart = parse_csv(table.chart_csv(matrix, outcome=Outcome("Classification", only_one)))
    assert sorted(chart["Ranking"]) == ["0", "1", "2"]  # one class: F undefined, table order


def test_survival_ranks_against_the_event():
    matrix, labels = classification_case()
    survival = {p: {"Time": "12", "Event": v["Outcome"]} for p, v in labels.items()}
    chart = parse_csv(table.chart_csv(matrix, outcome=Outcome("Survival", survival)))
    assert chart.loc[chart["Ranking"] == "0", "FeatureID"].item().endswith("original_sep")


def test_ranking_limited_to_some_patients_equals_ranking_a_table_of_only_them():
    matrix, labels = classification_case()
    rng = np.random.default_rng(3)
    flipped = {p: {"Outcome": str(rng.integers(0, 2))} for p in labels}  # noise labels
    chosen = [f"P{i:02d}" for i in range(0, 30, 3)]
    limited = table.chart(
        matrix, outcome=Outcome("Classification", flipped), ranking_patients=chosen
    )
    frame = matrix.to_frame()
    alone = FeatureMatrix.from_frame(frame[frame["PatientID"].isin(chosen)].reset_index(drop=True))
    reference = parse_csv(table.chart_csv(alone, outcome=Outcome("Classification", flipped)))
    assert limited.ranked_on == len(chosen)
    assert list(parse_csv(limited.csv)["Ranking"]) == list(reference["Ranking"])


def test_ranking_patients_of_a_split_never_include_test_patients():
    split = SimpleNamespace(
        data_splitting_type="traintest", training_patients=["A", "B"], test_patients=["B", "C"]
    )
    assert feature_service.ranking_patients(split, ["A", "B", "C", "D"]) == {"A"}
    split.training_patients = None  # only the test list stored: every other patient
    assert feature_service.ranking_patients(split, ["A", "B", "C", "D"]) == {"A", "D"}
    split.test_patients = None  # nothing stored: no split
    assert feature_service.ranking_patients(split, ["A"]) is None
    split.data_splitting_type, split.training_patients = "fulldataset", ["A"]
    assert feature_service.ranking_patients(split, ["A", "B"]) is None


def test_anova_f_matches_the_textbook_formula():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6)) + np.arange(6)
    codes = rng.integers(0, 3, 40)
    expected = []
    for col in x.T:
        groups = [col[codes == c] for c in range(3)]
        grand = col.mean()
        between = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / 2
        within = sum(((g - g.mean()) ** 2).sum() for g in groups) / (40 - 3)
        expected.append(between / within)
    np.testing.assert_allclose(table.anova_f(x, codes), expected, rtol=1e-10)


def test_outcome_from_category_reads_labels():
    contents = [{"Outcome": "1"}, {"Outcome": " undefined "}, {}, {"Outcome": None}]
    labels = [SimpleNamespace(patient_id=f"P{i}", label_content=c) for i, c in enumerate(contents)]
    category = SimpleNamespace(label_type="Classification", labels=labels)
    assert Outcome.from_category(category).usable_targets() == {"P0": "1"}


# --- multipart --------------------------------------------------------------------------------


def test_multipart_layout_is_byte_exact_and_parses_back():
    tabular = b"PatientID,Modality,ROI,a\nP1,CT,GTV,1.0\n"
    chart = f"FeatureID,P1\nCT{NBH}GTV{NBH}a,0.0\n".encode()
    body, content_type = table.feature_details_multipart(tabular, chart)
    boundary = re.fullmatch(r"multipart/form-data; boundary=([0-9a-f]{32})", content_type)[1]
    assert body == (
        f'--{boundary}\r\nContent-Disposition: form-data; name="features_tabular"\r\n\r\n'.encode()
        + tabular
        + f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="features_chart"\r\n\r\n'.encode()
        + chart
        + f"\r\n--{boundary}--\r\n".encode()
    )
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = list(message.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == [
        "features_tabular",
        "features_chart",
    ]
    assert all(p.get_filename() is None and "Content-Type" not in p for p in parts)
    assert [p.get_payload(decode=True) for p in parts] == [tabular, chart]


def test_multipart_accepts_text_and_changes_boundary_each_time():
    body1, type1 = table.feature_details_multipart("a", "b")
    _, type2 = table.feature_details_multipart("a", "b")
    assert type1 != type2
    assert b'name="features_tabular"\r\n\r\na\r\n' in body1


# --- ZIP --------------------------------------------------------------------------------------


def zip_case() -> FeatureMatrix:
    """PT and CT groups with firstorder names and a full-precision value."""
    return matrix_of(
        [
            ("P1", "PT", "GTV T", {"original_firstorder_Mean": 0.1 + 0.2, "original_shape_X": 1}),
            ("P1", "CT", "GTV T", {"original_firstorder_Mean": 1 / 3}),
            ("P2", "CT", "GTV T", {"original_firstorder_Mean": 2.0}),
        ],
        patients_without_values=["P0"],
    )


def test_zip_members_renaming_and_precision():
    data, filename = table.features_zip(zip_case(), "My album=1")
    assert filename == "features_album_My-album_1.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == [
            "features_album_My-album=1_CT-GTV T.csv",
            "features_album_My-album=1_PT-GTV T.csv",
        ]
        ct = archive.read("features_album_My-album=1_CT-GTV T.csv").decode()
        pt = archive.read("features_album_My-album=1_PT-GTV T.csv").decode()
    assert ct.splitlines() == [
        "PatientID,Modality,ROI,original_intensity_Mean,original_shape_X",
        "P0,CT,GTV T,,",
        f"P1,CT,GTV T,{1 / 3!r},",
        "P2,CT,GTV T,2.0,",
    ]
    assert pt.splitlines() == [
        "PatientID,Modality,ROI,original_SUV_Mean,original_shape_X",
        "P0,PT,GTV T,,",
        "P1,PT,GTV T,0.30000000000000004,1.0",
    ]


def test_collection_zip_names():
    data, filename = table.features_zip(zip_case(), "Lung study", "best 10")
    assert filename == "features_album_Lung-study_best-10.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist()[0] == "features_album_Lung-study_collection_best-10_CT-GTV T.csv"


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("features_album_Lung study.zip", "features_album_Lung-study.zip"),
        ("a=b;c\"d'.csv", "a_b_c_d_.csv"),
        ("Étude poumon.zip", "Etude-poumon.zip"),
        ("tab\there", "tab-here"),
    ],
)
def test_attachment_filename(raw, safe):
    assert table.attachment_filename(raw) == safe


def test_formatter_chunks_join_up(monkeypatch):
    monkeypatch.setattr(table, "_CHUNK_CELLS", 50)  # several rows per chunk, and a ragged end
    rng = np.random.default_rng(9)
    matrix = random_matrix(rng, 23, 17)
    expected = matrix.to_frame().sort_values(["PatientID", "Modality", "ROI"])
    assert table.tabular_csv(matrix) == expected.round(3).to_csv(index=False).encode()


def test_zip_member_names_never_make_folders():
    matrix = matrix_of([("P1", "CT", "GTV/left\\1", {"original_a": 1.0})])
    data, _ = table.features_zip(matrix, "a/b")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["features_album_a_b_CT-GTV_left_1.csv"]
