"""`make run`'s key of tenant dev: made once, kept across runs, readable by its owner only."""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from herald.core import keys

# dev/ is scripts, not a package (see test_devrun_embedded).
if TYPE_CHECKING:
    from dev.devkey import DEV_TENANT, dev_key
else:
    sys.path.insert(0, str(Path(__file__).parents[2] / "dev"))
    from devkey import DEV_TENANT, dev_key


def test_the_dev_key_is_made_once_and_kept_across_runs(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE api_keys"))
    saved = tmp_path / ".herald-dev" / "dev-key"
    key = dev_key(database_url, saved)
    assert keys.KEY_PATTERN.fullmatch(key)
    assert saved.read_text() == f"{key}\n"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert dev_key(database_url, saved) == key  # the next `make run`
    with engine.connect() as conn:
        tenants = conn.execute(text("SELECT tenant FROM api_keys")).scalars().all()
    assert tenants == [DEV_TENANT]


def test_a_dev_key_the_database_no_longer_honours_is_replaced(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    saved = tmp_path / "dev-key"
    key = dev_key(database_url, saved)
    with engine.begin() as conn:
        keys.revoke(conn, keys.key_id_of(key) or "")
    fresh = dev_key(database_url, saved)
    assert fresh != key
    assert saved.read_text() == f"{fresh}\n"
    saved.write_text("not a key\n")
    assert dev_key(database_url, saved) not in (key, fresh)
