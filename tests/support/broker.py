"""Broker and event fixtures: the real test Redis, read as a worker and the Socket.IO service do."""

from __future__ import annotations

import json
import time

import pytest
import redis

from shared import jobs

UNACKED_TAG = "qi2-test-lost-messages"  # a test's entry in the broker's delivered set


@pytest.fixture
def broker(settings):
    """The broker's queues, emptied around the test."""
    client = redis.Redis.from_url(settings.celery_broker_url)
    keys = (jobs.EXTRACTION_QUEUE, jobs.TRAINING_QUEUE, jobs.PREDICTION_QUEUE)
    client.delete(*keys)
    yield client
    client.delete(*keys)
    client.hdel("unacked", UNACKED_TAG)
    client.close()


@pytest.fixture
def published(settings):
    """Every Socket.IO event published meanwhile, as (event, room, data)."""
    client = redis.Redis.from_url(settings.socket_message_queue)
    pubsub = client.pubsub()
    pubsub.subscribe(settings.socketio_channel)
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    seen: list[tuple[str, str, dict]] = []

    def read() -> list[tuple[str, str, dict]]:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                body = json.loads(message["data"])
                data = body["data"]  # the emit's arguments: one payload
                seen.append(
                    (body["event"], body["room"], data[0] if isinstance(data, list) else data)
                )
        return seen

    yield read
    pubsub.close()
    client.close()
