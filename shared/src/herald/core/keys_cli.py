"""herald-keys: create, list and revoke API keys; show a tenant's callback signing secret.

A new key or secret is printed once, alone on the last line of standard output; Herald keeps
only a hash of each key. Every error is one line on standard error and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

from psycopg.errors import UndefinedTable
from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from herald.core import keys, tenants
from herald.core.db import make_engine
from herald.core.settings import Settings

PROG = "herald-keys"
_MAX_RATE = 2**31 - 1  # PostgreSQL's integer


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, without argparse's usage block: --help shows that.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _tenant(value: str) -> str:
    try:
        tenants.check_tenant(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _rate(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= _MAX_RATE:
        raise argparse.ArgumentTypeError(f"a rate is a whole number from 1 to {_MAX_RATE}")
    return int(value)


def _key_id(value: str) -> str:
    # Never echo the value: it may be a key.
    key_id = keys.key_id_of(value)
    if key_id is None and keys.KEY_ID_PATTERN.fullmatch(value):
        key_id = value
    if key_id is None:
        raise argparse.ArgumentTypeError(
            "KEY is a key id as `herald-keys list` shows it (16 hex digits) or a key (hk_...)"
        )
    return key_id


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    create = commands.add_parser(
        "create", help="make a key for a tenant", description="Make a key for a tenant and "
        "print it, alone on the last line. It is shown this once."
    )  # fmt: skip
    create.add_argument("--tenant", required=True, type=_tenant, help="the key's tenant")
    create.add_argument("--label", help="a note for people (who holds the key, what for)")
    create.add_argument(
        "--rate", type=_rate,
        help="accepted messages per second for this key (default: HERALD_TENANT_RATE)",
    )  # fmt: skip
    listing = commands.add_parser(
        "list", help="show keys (never their secrets)",
        description="Show key ids, tenants, labels, rates, created, last-used (as the api saw "
        "them) and revoked times; never a secret.",
    )  # fmt: skip
    listing.add_argument("--tenant", type=_tenant, help="only this tenant's keys")
    revoke = commands.add_parser(
        "revoke", help="revoke a key", description="Revoke a key: every replica refuses it "
        "within 5 s. Revoking a revoked key changes nothing."
    )  # fmt: skip
    revoke.add_argument(
        "key", metavar="KEY", type=_key_id, help="a key id from `herald-keys list`, or the key"
    )
    secret = commands.add_parser(
        "secret", help="print a tenant's callback signing secret",
        description="Print the tenant's callback signing secret, alone on the last line; it is "
        "made on first use.",
    )  # fmt: skip
    secret.add_argument("--tenant", required=True, type=_tenant, help="the tenant")
    secret.add_argument("--rotate", action="store_true", help="replace it with a new one first")
    return parser


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _create(conn: Connection, args: argparse.Namespace) -> list[str]:
    key_id, key = keys.create(conn, args.tenant, args.label, args.rate)
    rate = "default" if args.rate is None else f"{args.rate}/s"
    return [
        f"created key {key_id} for tenant {args.tenant} (rate {rate})",
        "it is shown this once: Herald keeps only its hash",
        key,
    ]


def _list(conn: Connection, args: argparse.Namespace) -> list[str]:
    rows = [("KEY ID", "TENANT", "RATE", "CREATED", "LAST USED", "REVOKED", "LABEL")]
    for info in keys.listed(conn, args.tenant):
        rate = "default" if info.rate is None else str(info.rate)
        times = (_time(info.created_at), _time(info.last_used_at), _time(info.revoked_at))
        rows.append((info.id, info.tenant, rate, *times, info.label or "-"))
    # Aligned columns; the label, free text, goes last.
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*map(str.ljust, row[:-1], widths), row[-1]]) for row in rows]


def _revoke(conn: Connection, args: argparse.Namespace) -> list[str]:
    info = keys.revoke(conn, args.key)
    if info is None:
        _fail(f"no key {args.key}")
    return [f"key {info.id} of tenant {info.tenant} revoked at {_time(info.revoked_at)}"]


def _secret(conn: Connection, args: argparse.Namespace) -> list[str]:
    secret, new = tenants.signing_secret(conn, args.tenant, args.rotate)
    made = "rotated" if args.rotate else "new" if new else "as before"
    return [f"callback signing secret of tenant {args.tenant} ({made})", secret]


_COMMANDS: dict[str, Callable[[Connection, argparse.Namespace], list[str]]] = {
    "create": _create,
    "list": _list,
    "revoke": _revoke,
    "secret": _secret,
}


def _database_error(error: DBAPIError) -> str:
    # The driver's own first line only: SQLAlchemy's text adds the statement and parameters.
    first = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
    hint = "; run herald-migrate" if isinstance(error.orig, UndefinedTable) else ""
    return f"database: {first or type(error.orig).__name__}{hint}"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        first = error.errors()[0]
        _fail(f"setting HERALD_{str(first['loc'][0]).upper()}: {first['msg']}")
    engine = make_engine(settings, pool_size=1)
    try:
        with engine.begin() as conn:
            lines = _COMMANDS[args.command](conn, args)
    except DBAPIError as error:
        _fail(_database_error(error))
    finally:
        engine.dispose()
    print("\n".join(lines))
