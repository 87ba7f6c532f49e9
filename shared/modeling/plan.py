"""The training plan: label checks and the nested cross-validation layout, before anything runs.

Pure Python, so the web process can answer M2 with `n-steps` and reject bad labels with a 400
before the training worker sees the job. The engine calls the same function, so the number of
`progress("training")` events always equals `n_steps`.

Nested cross-validation (the reported estimate): the outer folds (k folds x r repetitions,
stratified) estimate performance; within each outer training fold an inner k-fold search
chooses the algorithm and its hyper-parameters. The final model is that same inner search run
on all training patients, then refitted on them.

Progress unit: one step per outer split (its inner search done and the chosen candidate scored
on it), one per split of the final search, and one for the final refit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_FOLDS = 5
TARGET_SPLITS = 10  # outer folds x repeats; J = 10 keeps the corrected t interval usable
MIN_PATIENTS = 6
# Each class (or event group) needs 3 training patients: an outer training fold then still
# holds 2 of them, the least an inner stratified split needs.
MIN_GROUP = 3
KINDS = ("classification", "survival")
MODES = ("fulldataset", "traintest")


class TrainingInputError(ValueError):
    """Training cannot run on these data; the message says why (the platform answers 400)."""


@dataclass(frozen=True)
class TrainingPlan:
    """How training will run: progress steps, outer folds and repeats, inner folds, notes."""

    n_steps: int
    n_splits: int  # outer folds (and folds of the final search)
    n_repeats: int  # repetitions of the outer folds
    notes: tuple[str, ...] = ()

    @property
    def n_outer(self) -> int:
        """Return the number of outer splits (folds x repeats)."""
        return self.n_splits * self.n_repeats


def plan(kind: str, mode: str, training_outcome: Sequence[Any]) -> TrainingPlan:
    """Validate the training patients' outcomes and return the training plan."""
    if kind not in KINDS:
        raise TrainingInputError(f"unknown model type {kind!r}")
    if mode not in MODES:
        raise TrainingInputError(f"unknown data splitting type {mode!r}")
    outcome = list(training_outcome)
    if len(outcome) < MIN_PATIENTS:
        raise TrainingInputError(
            f"too few labelled training patients ({len(outcome)}); at least {MIN_PATIENTS} needed"
        )
    if kind == "classification":
        smallest, notes = _classification_strata(outcome)
    else:
        smallest, notes = _survival_strata(outcome)
    n_splits = min(MAX_FOLDS, smallest)
    n_repeats = max(2, math.ceil(TARGET_SPLITS / n_splits))
    if n_splits < MAX_FOLDS:
        notes.append(
            f"Cross-validation reduced to {n_splits} folds ({n_repeats} repetitions): "
            f"the smallest group has only {smallest} training patients."
        )
    n_steps = n_splits * n_repeats + n_splits + 1
    return TrainingPlan(n_steps, n_splits, n_repeats, tuple(notes))


def _classification_strata(outcome: list[Any]) -> tuple[int, list[str]]:
    """Check a binary outcome; return the smallest class count and notes."""
    counts = Counter(str(label) for label in outcome)
    if any(label.strip() == "" or label == "None" for label in counts):
        raise TrainingInputError("training labels must not be empty")
    if len(counts) != 2:
        found = ", ".join(repr(c) for c in sorted(counts))
        raise TrainingInputError(
            f"classification needs exactly two classes among the training patients, found "
            f"{len(counts)} ({found})"
        )
    label, smallest = min(counts.items(), key=lambda item: item[1])
    if smallest < MIN_GROUP:
        raise TrainingInputError(
            f"class {label!r} has {smallest} training patient(s); each class needs at least "
            f"{MIN_GROUP} for nested cross-validation"
        )
    return smallest, []


def _survival_strata(outcome: list[Any]) -> tuple[int, list[str]]:
    """Check (time, event) pairs; return the smallest event-group count and notes."""
    events = 0
    for item in outcome:
        try:
            time, event = item
            time = float(time)
        except (TypeError, ValueError):
            raise TrainingInputError(
                f"survival outcomes must be (time, event) pairs, got {item!r}"
            ) from None
        if not math.isfinite(time) or time < 0:
            raise TrainingInputError(f"survival times must be finite and >= 0, got {time!r}")
        events += bool(event)
    censored = len(outcome) - events
    if events < MIN_GROUP:
        raise TrainingInputError(
            f"survival training needs at least {MIN_GROUP} events among the training patients "
            f"for nested cross-validation, found {events}"
        )
    notes = []
    if censored == 0:
        notes.append("No censored training patient: folds are not stratified on the event.")
    return min(events, censored) if censored >= MIN_GROUP else events, notes
