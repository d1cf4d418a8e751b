"""Fixtures for job tests: a private Redis database (workers' queues live there too)."""

from __future__ import annotations

import pytest

from tests.services.jobs.harness import jobs_redis_db_url


@pytest.fixture()
def jobs_redis(redis_url):
    from services.infra.redis import connect

    client = connect(jobs_redis_db_url(redis_url, db=6))
    client.flushdb()
    yield client
    client.flushdb()
