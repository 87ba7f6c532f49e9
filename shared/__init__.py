"""The application core shared by the web app and the workers.

Settings, database models and migrations, one folder per domain (models, schemas, service),
image-source clients, task contracts and event publishing. No Flask, PyRadiomics or scikit-learn.
"""
