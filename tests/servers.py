"""The machine's shared PostgreSQL and Redis, which every level of tests uses; CI has them too.

A missing server fails the run, never skips. Each test process makes its own database and each
test its own Redis namespace in them (tests/conftest.py).
"""

from __future__ import annotations

import os

POSTGRES_URL = os.environ.get("HERALD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
