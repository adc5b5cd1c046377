"""The schemas make lint-deploy validates against are the ones deploy/schemas/README.md names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parents[2] / "deploy" / "schemas"


def test_each_vendored_schema_is_the_file_its_readme_records() -> None:
    # Each table row: | `file` | what | source | version | `sha256` |
    rows = re.findall(
        r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (SCHEMAS / "README.md").read_text(), re.M
    )
    assert rows, "deploy/schemas/README.md lists no schema"
    for name, digest in rows:
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name
    listed = {name for name, _ in rows}
    assert listed == {path.name for path in SCHEMAS.glob("*.json")}
