"""herald-keys as an operator runs it: a real process on the real database."""

from __future__ import annotations

import hashlib
import subprocess
from typing import Protocol

import pytest
from sqlalchemy import Engine, text

from herald.core.keys import KEY_PATTERN
from herald.core.settings import Settings
from tests.stack import BIN


class Run(Protocol):
    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def run(settings: Settings, engine: Engine) -> Run:
    """herald-keys ARGS on the test database; fails unless it exits with `code`."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE api_keys, tenants"))
    env = settings.child_environment()

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "herald-keys"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == code, done
        return done

    return run


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.rstrip("\n").splitlines()[-1]


def test_create_prints_the_key_alone_on_the_last_line_and_stores_only_its_hash(
    run: Run, engine: Engine
) -> None:
    key = last_line(run("create", "--tenant", "acme", "--label", "ci", "--rate", "50"))
    assert KEY_PATTERN.fullmatch(key)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_keys")).mappings().one()
    assert key.startswith(f"hk_{row['id']}_")
    assert (row["tenant"], row["label"], row["rate"]) == ("acme", "ci", 50)
    assert bytes(row["secret_hash"]) == hashlib.sha256(key.encode()).digest()
    assert key.split("_", 2)[2] not in str(dict(row))


def test_list_shows_ids_tenants_labels_rates_and_times_but_never_a_secret(run: Run) -> None:
    first = last_line(run("create", "--tenant", "acme", "--label", "billing app"))
    second = last_line(run("create", "--tenant", "globex", "--rate", "7"))
    everything = run("list").stdout
    header, *rows = everything.splitlines()
    assert header.split()[:3] == ["KEY", "ID", "TENANT"]
    assert len(rows) == 2
    assert rows[0].split()[:3] == [first.split("_")[1], "acme", "default"]
    assert rows[0].endswith("billing app")
    assert rows[1].split()[:3] == [second.split("_")[1], "globex", "7"]
    assert rows[1].split()[4:6] == ["-", "-"]  # never used, not revoked
    for key in (first, second):
        assert key.split("_", 2)[2] not in everything
    only = run("list", "--tenant", "globex").stdout.splitlines()
    assert len(only) == 2
    assert "globex" in only[1]


def test_revoke_takes_a_key_id_or_the_key_itself(run: Run, engine: Engine) -> None:
    by_id = last_line(run("create", "--tenant", "acme"))
    by_key = last_line(run("create", "--tenant", "acme"))
    run("revoke", by_id.split("_")[1])
    said = run("revoke", by_key).stdout
    assert by_key.split("_", 2)[2] not in said
    with engine.connect() as conn:
        revoked = conn.execute(text("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL"))
        assert revoked.scalar_one() == 2
    run("revoke", by_key)  # again: nothing changes, no error


def test_secret_is_made_on_first_use_kept_and_rotated(run: Run) -> None:
    first = last_line(run("secret", "--tenant", "acme"))
    assert first.startswith("hs_")
    assert len(first) >= 40
    assert last_line(run("secret", "--tenant", "acme")) == first
    rotated = last_line(run("secret", "--tenant", "acme", "--rotate"))
    assert rotated != first
    assert last_line(run("secret", "--tenant", "acme")) == rotated
    assert last_line(run("secret", "--tenant", "globex")) not in (first, rotated)


@pytest.mark.parametrize("command", [[], ["create"], ["list"], ["revoke"], ["secret"]])
def test_every_command_answers_help(run: Run, command: list[str]) -> None:
    assert "usage: herald-keys" in run(*command, "--help").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["revoke", "0123456789abcdef"],  # no such key
        ["revoke", "hk_not-a-key"],
        ["create"],
        ["create", "--tenant", "no spaces"],
        ["create", "--tenant", "acme", "--rate", "0"],
        ["secret"],
        ["frobnicate"],
    ],
)
def test_an_error_is_one_line_and_a_non_zero_exit(run: Run, args: list[str]) -> None:
    code = 1 if args[0] == "revoke" and args[1][0] == "0" else 2
    done = run(*args, code=code)
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("herald-keys")
    assert "hk_not-a-key" not in done.stderr  # a mistyped key is never echoed


def test_an_unreachable_database_is_a_one_line_error(settings: Settings) -> None:
    env = settings.child_environment(HERALD_DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")
    done = subprocess.run(
        [str(BIN / "herald-keys"), "list"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
    assert "database" in done.stderr
