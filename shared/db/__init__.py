"""Database plumbing: declarative base, engine and sessions, Alembic migrations."""
