"""A model's fitted pipeline in the database: compressed bytes in chunks, with a checksum.

Every API and worker process on any machine reads the same rows; the pipeline is written in
the transaction that writes the model row, and deleted with it (ON DELETE CASCADE).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.errors import InvalidInput, NotFound
from shared.modeling.models import ModelArtifactChunk, TrainedModel

# MariaDB's default max_allowed_packet is 16 MiB: one INSERT per 4 MiB chunk stays well below.
CHUNK_BYTES = 4 * 1024 * 1024
MAX_BYTES = 1024 * 1024 * 1024


class ArtifactTooLarge(InvalidInput):
    """The fitted pipeline is larger than the platform stores."""


def uri(model_id: int) -> str:
    """Return the `model_path` the API shows for a model stored in the database."""
    return f"db://model/{model_id}"


def attach(session: so.Session, model: TrainedModel, data: bytes) -> None:
    """Add the pipeline's bytes to a (new, flushed) model row; the caller commits both."""
    if len(data) > MAX_BYTES:
        size, limit = len(data) / 1e6, MAX_BYTES / 1e6
        raise ArtifactTooLarge(f"The fitted model takes {size:.0f} MB; the limit is {limit:.0f} MB")
    model.artifact_sha256 = hashlib.sha256(data).hexdigest()
    model.artifact_size = len(data)
    model.artifact_path = uri(model.id)
    for seq, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES)):
        model.chunks.append(ModelArtifactChunk(seq=seq, data=data[start : start + CHUNK_BYTES]))
        session.flush()  # one chunk per statement: never one packet with every chunk


def read(session: so.Session, model: TrainedModel) -> bytes:
    """Return the pipeline's bytes after checking size and checksum."""
    chunks = session.scalars(
        sa.select(ModelArtifactChunk.data)
        .where(ModelArtifactChunk.model_id == model.id)
        .order_by(ModelArtifactChunk.seq)
    )
    data = b"".join(chunks)
    if not data or model.artifact_sha256 is None:
        raise NotFound("The fitted pipeline of this model is not stored - please retrain")
    if (
        len(data) != model.artifact_size
        or hashlib.sha256(data).hexdigest() != model.artifact_sha256
    ):
        raise InvalidInput("The stored pipeline of this model is damaged (checksum mismatch)")
    return data
