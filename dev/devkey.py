"""The key `make run` prints: a key of tenant `dev`, made once and kept in `.herald-dev/`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from herald.core import keys
from herald.core.db import make_engine
from herald.core.settings import Settings

DEV_TENANT: Final = "dev"


def _usable(settings: Settings, key: str) -> bool:
    """Whether the database holds key, unrevoked, for tenant dev."""
    key_id = keys.key_id_of(key)
    if key_id is None:
        return False
    engine = make_engine(settings, pool_size=1)
    try:
        with engine.connect() as conn:
            stored = keys.find(conn, [key_id]).get(key_id)
    finally:
        engine.dispose()
    return (
        stored is not None
        and stored.tenant == DEV_TENANT
        and not stored.revoked
        and keys.matches(key, stored.secret_hash)
    )


def _create(settings: Settings) -> str:
    engine = make_engine(settings, pool_size=1)
    try:
        with engine.begin() as conn:
            return keys.create(conn, DEV_TENANT, "make run", None)[1]
    finally:
        engine.dispose()


def dev_key(database_url: str, path: Path) -> str:
    """The key saved at path if the database still knows it; else a new one, saved there,
    readable by this user only (a database made afresh, or the key revoked, gets a new one)."""
    settings = Settings(database_url=database_url)
    saved = path.read_text().strip() if path.exists() else ""
    if saved and _usable(settings, saved):
        return saved
    key = _create(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{key}\n")
    path.chmod(0o600)  # O_CREAT's mode applies to a new file only
    return key
