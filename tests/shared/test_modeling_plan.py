"""shared.modeling.plan: label checks and the nested CV layout, and the grids it counts."""

from __future__ import annotations

import pytest

from shared.modeling import grids
from shared.modeling.plan import TrainingInputError, plan


def test_binary_text_labels_plan_five_folds_two_repeats():
    result = plan("classification", "traintest", ["yes"] * 12 + ["no"] * 9)
    assert (result.n_splits, result.n_repeats, result.n_outer) == (5, 2, 10)
    # 10 outer splits + the final search's 5 folds + the final refit
    assert result.n_steps == 16
    assert result.notes == ()


def test_small_class_reduces_folds_and_says_so():
    result = plan("classification", "fulldataset", ["a"] * 20 + ["b"] * 3)
    assert (result.n_splits, result.n_repeats) == (3, 4)
    assert result.n_steps == 12 + 3 + 1
    assert "reduced to 3 folds" in result.notes[0]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["a"] * 5 + ["b"] * 5 + ["c"] * 5, "exactly two classes"),
        (["a"] * 10 + ["b"], "has 1 training patient"),
        # nested CV: an outer training fold must still hold 2 of each class
        (["a"] * 10 + ["b"] * 2, "has 2 training patient.*at least 3 for nested"),
        (["a"] * 10, "exactly two classes"),
        (["a", "b", "a"], "too few"),
    ],
)
def test_bad_classification_labels(labels, message):
    with pytest.raises(TrainingInputError, match=message):
        plan("classification", "traintest", labels)


def test_survival_plan_stratifies_on_event():
    outcome = [(float(i), i % 3 == 0) for i in range(1, 31)]  # 10 events, 20 censored
    assert plan("survival", "fulldataset", outcome).n_splits == 5
    with pytest.raises(TrainingInputError, match="at least 3 events"):
        plan("survival", "fulldataset", [(float(i), i < 3) for i in range(1, 20)])
    with pytest.raises(TrainingInputError, match="time, event"):
        plan("survival", "fulldataset", [1.0] * 10)
    assert issubclass(TrainingInputError, ValueError)


def test_grids_are_small_and_cover_every_algorithm():
    assert grids.count_candidates("classification") < 50
    assert {a for a, _, _ in grids.candidates("classification")} == set(
        grids.CLASSIFICATION_ALGORITHMS
    )
    assert {a for a, _, _ in grids.candidates("survival")} == set(grids.SURVIVAL_ALGORITHMS)
    only = grids.candidates("survival", ["IPCRidge"])
    assert only and {a for a, _, _ in only} == {"IPCRidge"}
    with pytest.raises(ValueError, match="unknown"):
        grids.candidates("classification", ["XGBoost"])


def test_every_classifier_is_searched_with_balanced_class_weights():
    """Issue 15 §7: with an uncommon positive class the grid offers class_weight="balanced"."""
    weights = {}
    for algorithm, _, params in grids.candidates("classification"):
        weights.setdefault(algorithm, set()).add(params.get("class_weight"))
    assert weights == {a: {None, "balanced"} for a in grids.CLASSIFICATION_ALGORITHMS}
