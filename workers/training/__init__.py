"""Model training: estimators, pipelines and metrics (pure), and the training task."""
