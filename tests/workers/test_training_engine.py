"""workers.training.engine on small synthetic tables: every algorithm, mode and clinical policy,
progress counts, leakage, bootstrap CI width, label handling and predict()."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score

from shared.modeling import grids
from shared.modeling.plan import TrainingInputError, plan
from tests.workers.training_support import Events, make_data, noise_table
from workers.training.engine import ClinicalColumn, predict, train

# Small grids for the tests that only check that things train: every algorithm keeps its
# parameter kinds (penalties, kernels), forests get fewer trees.
FAST_GRID = {
    **grids.CLASSIFICATION_GRID,
    **grids.SURVIVAL_GRID,
    "RandomForestClassifier": [{"n_estimators": 20, "min_samples_leaf": 2}],
    "RandomSurvivalForest": [{"n_estimators": 20, "min_samples_leaf": 5}],
}
ONE_LOGISTIC = {"LogisticRegression": [{"penalty": "l2", "C": 1.0}]}
TINY = {"algorithms": ["LogisticRegression"], "scalers": ("StandardScaler",), "n_jobs": 1}
ENCODINGS = ("One-Hot Encoding", "Ordered Categories", "Normalization", "None")
POLICIES = ("Drop", "Mode", "Median", "Mean", "None")


def _signal_table(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n patients, 8 features (3 informative), outcomes driven by one hidden risk."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    features = pd.DataFrame(
        rng.normal(size=(n, 8)),
        index=[f"P{i:03d}" for i in range(n)],
        columns=[f"CT-GTV-f{j}" for j in range(8)],
    )
    features.iloc[:, :3] += risk[:, None]
    features.iloc[rng.random((n, 8)) < 0.03] = np.nan  # a few missing radiomics values
    outcome = pd.DataFrame(
        {
            "label": np.where(risk + rng.normal(scale=0.7, size=n) > 0, "yes", "no"),
            "time": np.round(rng.exponential(30 * np.exp(-risk)), 1) + 0.1,
            "event": rng.random(n) < 0.7,
        },
        index=features.index,
    )
    return features, outcome


def _with_clinical(features: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Add a categorical and a numeric clinical column, each with missing values."""
    rng = np.random.default_rng(seed)
    n = len(features)
    out = features.copy()
    sex = rng.choice(["M", "F", "X"], size=n).astype(object)
    sex[rng.random(n) < 0.1] = None
    out["7::Sex"] = sex
    age = rng.normal(60, 10, n).round(0).astype(object)
    age[rng.random(n) < 0.1] = None
    out["7::Age"] = age
    return out


def _split(outcome: pd.DataFrame, column: str, test_share: float, seed: int):
    """A stratified train/test split of the patients."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for _, group in outcome.groupby(column):
        ids = list(rng.permutation(group.index))
        cut = round(len(ids) * test_share)
        test += ids[:cut]
        train += ids[cut:]
    return sorted(train), sorted(test)


def _n_steps(data) -> int:
    """plan()'s n_steps for TrainingData, as the platform computes it."""
    ids = [p for p in data.training_patients if p in data.outcome.index]
    if data.kind == "classification":
        items = list(data.outcome.loc[ids, "label"].astype(str))
    else:
        rows = data.outcome.loc[ids]
        items = list(zip(rows["time"], rows["event"], strict=True))
    mode = "fulldataset" if data.test_patients is None else "traintest"
    return plan(data.kind, mode, items).n_steps


@pytest.fixture(scope="module")
def small():
    features, outcome = _signal_table(48, seed=3)
    return _with_clinical(features, seed=4), outcome


@pytest.mark.parametrize("mode", ["fulldataset", "traintest"])
@pytest.mark.parametrize("algorithm", grids.CLASSIFICATION_ALGORITHMS + grids.SURVIVAL_ALGORITHMS)
def test_every_algorithm_trains_in_both_modes(small, algorithm, mode):
    features, outcome = small
    kind = "classification" if algorithm in grids.CLASSIFICATION_ALGORITHMS else "survival"
    column = "label" if kind == "classification" else "event"
    train_ids, test_ids = _split(outcome, column, 0.3, seed=1)
    if mode == "fulldataset":
        train_ids, test_ids = list(outcome.index), None
    clinical = (
        ClinicalColumn("7::Sex", "Categorical", "One-Hot Encoding", "Mode"),
        ClinicalColumn("7::Age", "Number", "Normalization", "Median"),
    )
    data = make_data(kind, features, outcome, train_ids, test_ids, clinical, "yes")
    events = Events()
    scalers = ("MinMaxScaler",) if mode == "fulldataset" else None
    result = train(
        data,
        events,
        algorithms=[algorithm],
        grid={algorithm: FAST_GRID[algorithm]},
        scalers=scalers,
        n_jobs=2,
        n_resamples=200,
    )

    assert result.best_algorithm == algorithm
    assert events.count("training") == _n_steps(data)
    assert [p for p, _ in events.calls[: events.count("training")]] == ["training"] * len(
        [c for c in events.calls if c[0] == "training"]
    )
    metric = "auc" if kind == "classification" else "c-index"
    cv = result.training_metrics[metric]
    assert 0 <= cv["inf_value"] <= cv["mean"] <= cv["sup_value"] <= 1
    assert (
        len(result.cv_scores[metric])
        == result.cv_signature["n_splits"] * (result.cv_signature["n_repeats"])
    )
    assert "7::Sex_M" in result.feature_names and "7::Age" in result.input_columns
    if mode == "fulldataset":
        assert result.test_metrics is None and result.test_predictions is None
        assert events.count("testing") == 0
        return
    assert set(result.test_predictions) == set(test_ids) == set(result.test_outcomes)
    assert result.test_validation == (
        f"Stratified percentile bootstrap (200 repetitions) on {len(test_ids)} test patients"
    )
    assert len(result.test_scores_values) == 200
    assert len(result.test_bootstrap_values[metric]) <= 200
    test = result.test_metrics[metric]
    assert test["inf_value"] <= test["mean"] <= test["sup_value"]
    assert events.count("testing") >= 2
    importance = [d["importance_value"] for d in result.test_feature_importance]
    assert importance == sorted(importance, reverse=True)
    assert {d["feature_name"] for d in result.test_feature_importance} == set(result.input_columns)
    if kind == "survival":
        # Higher risk score = shorter survival, for every algorithm (IPCRidge included).
        assert all(set(v) == {"risk_score"} for v in result.test_predictions.values())
    else:
        probabilities = result.test_predictions_probabilities
        assert all(math.isclose(sum(v["probabilities"]), 1) for v in probabilities.values())


def _combinations():
    return [
        (feat_type, encoding, policy)
        for feat_type in ("Categorical", "Number")
        for encoding in ENCODINGS
        for policy in POLICIES
    ]


def test_every_clinical_encoding_and_missing_policy_trains(small):
    """All 40 combinations: non-Drop ones share one model, each Drop one trains alone."""
    features, outcome = small
    train_ids, test_ids = _split(outcome, "label", 0.3, seed=2)
    columns, clinical = {}, []
    for feat_type, encoding, policy in _combinations():
        if policy == "Drop":
            continue
        name = f"{len(clinical)}::{feat_type[:3]}-{encoding[:4]}-{policy}"
        columns[name] = features["7::Sex" if feat_type == "Categorical" else "7::Age"]
        clinical.append(ClinicalColumn(name, feat_type, encoding, policy))
    table = features.assign(**columns)
    data = make_data("classification", table, outcome, train_ids, test_ids, clinical)
    events = Events()
    # One scaler and no worker processes: nested CV fits each tiny pipeline 65 times, and
    # here only the encodings matter (the parallel path is tested above).
    result = train(data, events, grid=ONE_LOGISTIC, **TINY)
    assert events.count("training") == _n_steps(data)
    assert result.dropped_patients == []
    assert {c.name for c in clinical} <= set(result.input_columns)
    assert math.isfinite(result.test_metrics["auc"]["mean"])
    # Missing values under "None" get an indicator; one-hot columns are named <column>_<category>.
    assert any(n.startswith("missingindicator_") for n in result.feature_names)
    assert any(n.endswith("_missing") for n in result.feature_names)
    assert "0::Cat-One--Mode_F" in result.feature_names

    for feat_type in ("Categorical", "Number"):
        for encoding in ENCODINGS:
            source = features["7::Sex" if feat_type == "Categorical" else "7::Age"]
            column = ClinicalColumn("9::Drop", feat_type, encoding, "Drop")
            table = features.assign(**{"9::Drop": source})
            data = make_data("classification", table, outcome, train_ids, test_ids, [column])
            events = Events()
            result = train(data, events, grid=ONE_LOGISTIC, n_resamples=200, **TINY)
            missing = sorted(source.index[source.isna()])
            assert result.dropped_patients == missing, (feat_type, encoding)
            assert not set(missing) & set(result.test_predictions)
            assert not set(missing) & set(result.cv_signature["patients"])
            assert events.count("training") == _n_steps(data)


def test_drop_that_reduces_the_folds_still_emits_the_promised_steps():
    features, outcome = _signal_table(40, seed=5)
    outcome["label"] = ["yes"] * 5 + ["no"] * 35  # 5 'yes' -> 5 folds
    features["3::Site"] = ["A", None, None, "B", "A"] + ["A"] * 35  # Drop leaves 3 'yes'
    data = make_data(
        "classification",
        features,
        outcome,
        list(outcome.index),
        None,
        [ClinicalColumn("3::Site", "Categorical", "One-Hot Encoding", "Drop")],
    )
    events = Events()
    result = train(data, events, algorithms=["SVC"], n_jobs=2)
    assert _n_steps(data) == 16 and events.count("training") == 16
    assert result.cv_signature["n_splits"] == 3
    assert "reduced to 3 folds" in result.training_validation
    assert result.dropped_patients == ["P001", "P002"]


def test_pipeline_statistics_come_from_training_patients_only(small):
    features, outcome = small
    train_ids, test_ids = _split(outcome, "label", 0.3, seed=2)
    shifted = features.copy()
    shifted.loc[test_ids, "CT-GTV-f5"] += 1000.0  # test patients far away on one feature
    data = make_data("classification", shifted, outcome, train_ids, test_ids)
    result = train(
        data,
        Events(),
        algorithms=["LogisticRegression"],
        grid=ONE_LOGISTIC,
        n_jobs=2,
        n_resamples=200,
    )
    radiomics = result.pipeline.named_steps["preprocess"].named_transformers_["radiomics"]
    imputer, scaler = radiomics[0], radiomics[-1]
    column = list(radiomics.feature_names_in_).index("CT-GTV-f5")
    training = shifted.loc[train_ids, "CT-GTV-f5"]
    assert imputer.statistics_[column] == pytest.approx(training.median())
    filled = training.fillna(training.median())
    if result.best_data_normalization == "StandardScaler":
        assert scaler.mean_[column] == pytest.approx(filled.mean())
    else:
        assert scaler.data_max_[column] == pytest.approx(filled.max())


def test_leakage_noise_features_stay_near_chance():
    """60 patients, random labels, 1,000 noise features and a clinical column with gaps.

    Leaky preprocessing (statistics or selection fitted on all patients) would push both AUCs
    far above 0.7. Without leakage they are chance values: with 40 / 20 patients their spread
    is wide (sd ~0.1), so the bounds hold for most random cohorts, not all.
    """
    features = noise_table(60, 1000, seed=21)
    rng = np.random.default_rng(22)
    age = rng.normal(60, 10, 60).astype(object)
    age[rng.random(60) < 0.2] = None
    features["4::Age"] = age
    outcome = pd.DataFrame(
        {"label": rng.permutation(["1"] * 30 + ["0"] * 30)}, index=features.index
    )
    train_ids, test_ids = _split(outcome, "label", 1 / 3, seed=23)  # 40 / 20
    clinical = [ClinicalColumn("4::Age", "Number", "Normalization", "Mean")]
    data = make_data("classification", features, outcome, train_ids, test_ids, clinical)
    # The linear models show leaky preprocessing most (forests are costly in nested CV).
    result = train(
        data,
        Events(),
        algorithms=["LogisticRegression", "SVC"],
        n_jobs=2,
        n_resamples=200,
        importance_repeats=10,
    )
    cv_auc = result.training_metrics["auc"]["mean"]
    test_auc = result.test_metrics["auc"]["mean"]
    print(f"leakage: CV AUC {cv_auc:.3f}, test AUC {test_auc:.3f} ({result.best_algorithm})")
    assert 0.3 <= cv_auc <= 0.7
    assert 0.3 <= test_auc <= 0.7


def test_bootstrap_ci_of_a_40_patient_test_set_is_wide():
    features, outcome = _signal_table(120, seed=8)
    train_ids, test_ids = _split(outcome, "label", 1 / 3, seed=9)
    assert len(test_ids) == 40
    data = make_data("classification", features, outcome, train_ids, test_ids)
    result = train(data, Events(), algorithms=["LogisticRegression"], n_jobs=2)
    auc = result.test_metrics["auc"]
    print(f"test AUC {auc['mean']:.3f} [{auc['inf_value']:.3f}, {auc['sup_value']:.3f}]")
    assert auc["sup_value"] - auc["inf_value"] > 0.1
    assert len(result.test_scores_values) == 1000
    values = result.test_bootstrap_values["auc"]
    assert np.percentile(values, 2.5) == pytest.approx(auc["inf_value"])


def test_text_labels_with_a_positive_class(small):
    features, outcome = small
    data = make_data("classification", features, outcome, *_split(outcome, "label", 0.3, 3))
    for positive in ("yes", "no"):
        result = train(
            data.__class__(**{**data.__dict__, "positive_class": positive}),
            Events(),
            algorithms=["LogisticRegression"],
            grid=ONE_LOGISTIC,
            n_jobs=2,
            n_resamples=200,
        )
        truth = {p: int(outcome.loc[p, "label"] == positive) for p in result.test_outcomes}
        assert result.test_outcomes == truth
        assert result.pipeline.qi2_metadata["classes"][1] == positive
        # Class 1 is the chosen label: its patients get the higher class-1 probabilities.
        p1 = {p: v["probabilities"][1] for p, v in result.test_predictions_probabilities.items()}
        chosen = np.mean([p1[p] for p, t in truth.items() if t == 1])
        other = np.mean([p1[p] for p, t in truth.items() if t == 0])
        assert chosen > other + 0.1


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["a"] * 10 + ["b"] * 10 + ["c"] * 10, "exactly two classes"),
        (["a"] * 29 + ["b"], "has 1 training patient"),
    ],
)
def test_bad_labels_are_rejected_before_fitting(labels, message):
    features = noise_table(30, 5, seed=1)
    outcome = pd.DataFrame({"label": labels}, index=features.index)
    events = Events()
    with pytest.raises(TrainingInputError, match=message):
        train(make_data("classification", features, outcome, list(features.index)), events)
    assert events.calls == []


def test_predict_matches_the_pipeline_and_names_missing_columns(small):
    features, outcome = small
    features = features.drop(columns=["7::Age"])  # every other column is radiomics
    train_ids, test_ids = _split(outcome, "label", 0.3, seed=4)
    clinical = [ClinicalColumn("7::Sex", "Categorical", "One-Hot Encoding", "None")]
    data = make_data("classification", features, outcome, train_ids, test_ids, clinical, "yes")
    result = train(data, Events(), algorithms=["SVC"], n_jobs=2, n_resamples=200)

    new = features.loc[test_ids].copy()
    new.loc[test_ids[0], [c for c in new.columns if c.startswith("CT-")]] = np.nan
    got = predict(result.pipeline, "classification", new, outcome, "yes", n_resamples=200)
    assert got.skipped == {test_ids[0]: "no radiomics feature values"}
    kept = test_ids[1:]
    expected = result.pipeline.predict_proba(new.loc[kept, result.input_columns])[:, 1]
    assert [got.predictions[p]["probabilities"][1] for p in kept] == pytest.approx(expected)
    assert [got.predictions[p]["prediction"] for p in kept] == [
        result.test_predictions[p]["prediction"] for p in kept
    ]
    assert got.metrics["auc"]["inf_value"] <= got.metrics["auc"]["mean"]

    with pytest.raises(TrainingInputError, match=r"CT-GTV-f2.*7::Sex|7::Sex.*CT-GTV-f2"):
        predict(
            result.pipeline,
            "classification",
            new.drop(columns=["CT-GTV-f2", "7::Sex"]),
            None,
            "yes",
        )

    survival = make_data("survival", features, outcome, train_ids, test_ids)
    fitted = train(survival, Events(), algorithms=["IPCRidge"], n_jobs=2, n_resamples=200)
    risks = predict(fitted.pipeline, "survival", features.loc[test_ids], None, None)
    assert risks.metrics is None
    assert {p: v["risk_score"] for p, v in risks.predictions.items()} == pytest.approx(
        {p: v["risk_score"] for p, v in fitted.test_predictions.items()}
    )


def test_permutation_importance_agrees_with_scikit_learn(small):
    """The vectorised importance equals sklearn's permutation_importance up to shuffle noise."""
    features, outcome = small
    train_ids, test_ids = _split(outcome, "label", 0.4, seed=1)
    clinical = (
        ClinicalColumn("7::Sex", "Categorical", "One-Hot Encoding", "None"),
        ClinicalColumn("7::Age", "Number", "Normalization", "Median"),
    )
    data = make_data("classification", features, outcome, train_ids, test_ids, clinical, "yes")
    result = train(
        data,
        Events(),
        algorithms=["LogisticRegression"],
        grid=ONE_LOGISTIC,
        n_jobs=1,
        n_resamples=100,
        importance_repeats=60,
    )
    ours = {d["feature_name"]: d["importance_value"] for d in result.test_feature_importance}
    y = np.array([result.test_outcomes[p] for p in test_ids])
    reference = permutation_importance(
        result.pipeline,
        features.loc[test_ids, result.input_columns],
        y,
        scoring=lambda model, x, target: roc_auc_score(target, model.predict_proba(x)[:, 1]),
        n_repeats=60,
        random_state=0,
    )
    expected = dict(zip(result.input_columns, reference.importances_mean, strict=True))
    assert ours == pytest.approx(expected, abs=0.03)
    assert max(ours, key=ours.get) in {"CT-GTV-f0", "CT-GTV-f1", "CT-GTV-f2"}
