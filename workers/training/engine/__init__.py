"""Model training and prediction, pure compute (no database, Celery or Flask).

train(): nested cross-validation on the training patients (shared/modeling/plan.py). Every
candidate of the grid (shared/modeling/grids.py) is one scikit-learn Pipeline (ColumnTransformer
+ estimator), so imputation, encoding and scaling are fitted on training folds only.

- Outer folds (k folds x r repetitions, stratified) estimate the performance of the whole
  procedure: within each outer training fold an inner k-fold search chooses the algorithm and
  its hyper-parameters, the choice is refitted on that outer training fold and scored on the
  outer validation fold. These scores are `training_metrics` (the reported estimate).
- The final model is the same inner search run on all training patients, its best candidate
  refitted on them. That search's best mean score is `selection_cv_metrics`: optimistic (the
  best of many), kept for reference only.
- In train/test mode the final model is then evaluated on the test patients with stratified
  percentile bootstrap CIs and permutation importance.

The modules, in the order a training runs through them: `inputs` (validation, the Drop filter,
the input table), `search` (splits and the parallel searches), `training` (train(), the refit
and the result), `evaluation` (the test set), `prediction` (predict() and external validation);
`scoring` holds the metrics they share. Only the names below are the engine's surface; the
boundary types come from shared/modeling/interface.py.
"""

from shared.modeling.interface import (
    ClinicalColumn,
    PredictionResult,
    Progress,
    TrainingData,
    TrainingResult,
)
from shared.modeling.plan import TrainingInputError
from workers.training.engine.prediction import predict
from workers.training.engine.training import train

__all__ = [
    "ClinicalColumn",
    "PredictionResult",
    "Progress",
    "TrainingData",
    "TrainingInputError",
    "TrainingResult",
    "predict",
    "train",
]
