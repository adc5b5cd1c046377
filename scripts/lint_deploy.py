"""make lint-deploy: check every deployment file offline with the real tools; exit 1 on a failure.

    python scripts/lint_deploy.py [--root DIR]

DIR (default: this repository) holds Dockerfile, docker-compose.yml and deploy/. Every check
runs, each prints one line, and the failures say what is wrong. The tools: BuildKit's parser
(the `dockerfile` wheel), the compose specification's JSON schema (committed in
deploy/schemas/, no download), kustomize and the Kubernetes schemas (scripts/k8s_manifests.py),
promtool, nginx, pgbouncer. docs/operations.md lists what is validated and what is not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dockerfile  # type: ignore[import-not-found]  # a compiled module without type hints
import jsonschema
import k8s_manifests  # scripts/k8s_manifests.py, beside this file
import yaml

# The compose specification's schema, committed with its source and version noted beside it
# (deploy/schemas/README.md), so the check needs no network. The linter's own, whatever --root.
COMPOSE_SCHEMA = Path(__file__).resolve().parents[1] / "deploy" / "schemas" / "compose-spec.json"
DEPLOYABLES = {
    "api": "herald-api",
    "status": "herald-status",
    "sender": "herald-sender",
    "messageapp": "herald-messageapp",
    "migrate": "herald-migrate",
}
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip
# The package each deployable's console script belongs to: its image's virtualenv is synced
# for that package alone (`uv sync --package`), so it holds no other deployable's code or libraries.
PACKAGES = DEPLOYABLES | {"migrate": "herald-core"}
VENV = "/app/.venv"
UV_SYNC = re.compile(r"\buv sync\b(?P<args>[^&;|]*)")
# What a final image must not do: install packages or carry uv (build tools stay in `build`).
BUILD_TOOLING = re.compile(r"apt-get|apk |pip install|\buv\b|gcc|build-essential")
# Grafana's interval variables, and what the syntax check puts in their place.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# Opt-in compose files, each applied on top of docker-compose.yml.
COMPOSE_OVERRIDES = ("docker-compose.pgbouncer.yml",)
# Deployables that need a session of their own (the sweeper's lock, migrations): behind a
# transaction pooler they must reach PostgreSQL by HERALD_DATABASE_SESSION_URL.
SESSION_TARGETS = tuple(
    target for target, script in DEPLOYABLES.items() if script in k8s_manifests.SESSION_SCRIPTS
)
# Where the pooler's configuration lives and is mounted (compose and Kubernetes alike).
PGBOUNCER_DIR = "deploy/pgbouncer"
PGBOUNCER_MOUNT = "/etc/pgbouncer"

Check = Callable[[Path], Iterable[str]]


def run(args: list[str], cwd: Path | None = None) -> list[str]:
    """Run a tool; its output as error lines if it fails, else nothing."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return []
    output = (done.stdout + done.stderr).strip().splitlines()
    return [f"{Path(args[0]).name}: {line}" for line in output if line.strip()] or ["failed"]


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: run `make system-deps`")
    return found


# Dockerfile ---------------------------------------------------------------------------------


def stages(path: Path) -> dict[str, tuple[str, list[Any]]]:
    """Each named stage: (what it is FROM, its instructions)."""
    found: dict[str, tuple[str, list[Any]]] = {}
    current: list[Any] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            current = []
            base, *rest = command.value
            stage = rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else f"#{len(found)}"
            found[stage] = (base, current)
        else:
            current.append(command)
    return found


def dockerfile_errors(root: Path) -> Iterator[str]:
    path = root / "Dockerfile"
    for command in dockerfile.parse_file(str(path)):
        if command.cmd.upper() not in INSTRUCTIONS:
            yield f"line {command.start_line}: unknown instruction {command.cmd}"
    found = stages(path)
    for target, script in DEPLOYABLES.items():
        if target not in found:
            yield f"no stage {target!r} (docker build --target {target})"
            continue
        chain: list[list[Any]] = []
        stage, seen = target, set()
        while stage in found and stage not in seen:  # the target, then the stages it is FROM
            seen.add(stage)
            chain.insert(0, found[stage][1])
            stage = found[stage][0]
        commands = [command for instructions in chain for command in instructions]
        users = [c.value[0] for c in commands if c.cmd == "USER"]
        if not users or users[-1].split(":")[0] in ("root", "0"):
            yield f"{target}: the image runs as root (no non-root USER)"
        started = [c for c in commands if c.cmd in ("CMD", "ENTRYPOINT")]
        if not started or script not in started[-1].value:
            yield f"{target}: does not start {script}"
        for command in commands:
            if command.cmd in ("RUN", "COPY") and BUILD_TOOLING.search(command.original):
                yield f"{target}: build tooling in the final image: {command.original}"
        yield from venv_errors(found, target, commands)


def chain_of(found: dict[str, tuple[str, list[Any]]], stage: str) -> list[Any]:
    """A stage's instructions after those of the stages it is FROM."""
    chain: list[Any] = []
    seen: set[str] = set()
    while stage in found and stage not in seen:
        seen.add(stage)
        chain[:0] = found[stage][1]
        stage = found[stage][0]
    return chain


def venv_errors(
    found: dict[str, tuple[str, list[Any]]], target: str, commands: list[Any]
) -> Iterator[str]:
    """The final stage's virtualenv is copied from a build stage that syncs only its package."""
    package = PACKAGES[target]
    sources = [
        flag.split("=", 1)[1]
        for c in commands
        if c.cmd == "COPY" and c.value and c.value[-1].rstrip("/") == VENV
        for flag in c.flags
        if flag.startswith("--from=")
    ]
    if len(sources) != 1:
        yield f"{target}: copies its virtualenv ({VENV}) from {len(sources)} build stages, not 1"
        return
    syncs = [
        m.group("args").split()
        for c in chain_of(found, sources[0])
        if c.cmd == "RUN"
        for m in UV_SYNC.finditer(c.original)
    ]
    if not syncs:
        yield f"{target}: its virtualenv's stage {sources[0]!r} runs no uv sync"
    for args in syncs:
        named = args[args.index("--package") + 1] if "--package" in args[:-1] else None
        if named != package:
            synced = named or "the whole workspace"
            yield f"{target}: {sources[0]!r} syncs {synced}, not --package {package}"


# Compose ------------------------------------------------------------------------------------


def service_errors(root: Path, services: dict[str, Any]) -> Iterator[str]:
    """Build targets, dependencies and bind mounts name things that exist."""
    targets = stages(root / "Dockerfile")
    for service_name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict) and build.get("target") not in targets:
            yield f"{service_name}: build target {build.get('target')!r} is no Dockerfile stage"
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):  # the short form: started, no condition
            depends_on = {name: {} for name in depends_on}
        for dependency, condition in depends_on.items():
            other = services.get(dependency)
            if other is None:
                yield f"{service_name}: depends on {dependency}, which is no service"
            elif condition.get("condition") == "service_healthy" and "healthcheck" not in other:
                yield f"{service_name}: waits for {dependency} healthy, which has no healthcheck"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./") and not (root / source).exists():
                yield f"{service_name}: mounts {source}, which does not exist"


def merged(base: Any, override: Any) -> Any:
    """override applied on base as compose does for what these files hold: mappings merge key
    by key, anything else (lists, scalars) is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: merged(base.get(k), v) for k, v in override.items()}}
    return override


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the list form: NAME=value
        env = dict(str(item).partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def pooling_errors(services: dict[str, Any]) -> Iterator[str]:
    """Services behind PgBouncer say so, and those needing a session keep one past it."""
    poolers = {name for name, s in services.items() if "pgbouncer" in str(s.get("image", ""))}
    for name, service in services.items():
        env = _environment(service)
        if "HERALD_DATABASE_URL" not in env:
            continue
        through = urlsplit(env["HERALD_DATABASE_URL"]).hostname in poolers
        pooling = env.get("HERALD_DATABASE_TRANSACTION_POOLING", "false").lower() == "true"
        if through != pooling:
            yield (
                f"{name}: HERALD_DATABASE_URL {'goes' if through else 'does not go'} through"
                f" PgBouncer, but HERALD_DATABASE_TRANSACTION_POOLING is {str(pooling).lower()}"
            )
        target = (service.get("build") or {}).get("target")
        session = urlsplit(env.get("HERALD_DATABASE_SESSION_URL", "")).hostname
        if through and target in SESSION_TARGETS and (not session or session in poolers):
            yield f"{name}: behind PgBouncer, needs HERALD_DATABASE_SESSION_URL past it"


def compose_file_errors(validator: Any, compose: Any) -> list[str]:
    """compose against the compose specification's schema."""
    errors = sorted(validator.iter_errors(compose), key=lambda e: [str(p) for p in e.absolute_path])
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(top)'}: {error.message}"
        for error in errors
    ]


def compose_errors(root: Path) -> Iterator[str]:
    base = yaml.safe_load((root / "docker-compose.yml").read_text())
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The draft the schema declares; its "$schema" spelling predates jsonschema's lookup table.
    validator = jsonschema.Draft201909Validator(schema)
    systems = {"docker-compose.yml": base}
    for name in COMPOSE_OVERRIDES:
        override = yaml.safe_load((root / name).read_text())
        systems[f"docker-compose.yml + {name}"] = merged(base, override)
    seen: set[str] = set()  # a fault of docker-compose.yml is named once, not per override
    for name, compose in systems.items():
        errors = compose_file_errors(validator, compose)
        if not errors:  # the references need the shapes the schema guarantees
            services = compose.get("services") or {}
            errors = [*service_errors(root, services), *pooling_errors(services)]
        yield from (f"{name}: {error}" for error in errors if error not in seen)
        seen.update(errors)


# Prometheus, nginx, Grafana -----------------------------------------------------------------


def prometheus_errors(root: Path) -> Iterator[str]:
    directory = root / "deploy/prometheus"
    yield from run([tool("promtool"), "check", "config", "prometheus.yml"], cwd=directory)
    yield from run([tool("promtool"), "test", "rules", "alerts.test.yml"], cwd=directory)
    config = yaml.safe_load((directory / "prometheus.yml").read_text())
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for needed in ("api", "status", "sender"):
        if needed not in jobs:
            yield f"no scrape job {needed!r}"
    for job in jobs.values():
        for names in (sd["names"] for sd in job.get("dns_sd_configs", [])):
            for host in set(names) - set(services):
                yield f"job {job['job_name']}: {host} is no compose service"


def gateway_errors(root: Path) -> Iterator[str]:
    config = (root / "deploy/gateway/nginx.conf").resolve()
    with tempfile.TemporaryDirectory(prefix="herald-nginx-") as prefix:
        yield from run(
            [tool("nginx"), "-t", "-q", "-p", f"{prefix}/", "-e", "stderr", "-c", str(config)]
        )


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target.get("expr", "")


def promql_errors(queries: list[tuple[str, str]]) -> list[str]:
    """PromQL syntax of each (where, query), checked by promtool as recording rules' exprs."""
    rules = [{"record": f"herald:syntax_check_{i}", "expr": q} for i, (_, q) in enumerate(queries)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
        yaml.safe_dump({"groups": [{"name": "syntax", "rules": rules}]}, file)
        file.flush()
        errors = run([tool("promtool"), "check", "rules", file.name])
    # promtool names the rule; say which panel or rule the query came from instead.
    return [
        re.sub(r'"herald:syntax_check_(\d+)"', lambda m: queries[int(m[1])][0], line)
        for line in errors
        if "could not parse" in line
    ] or errors


def panel_errors(where: str, dashboard: dict[str, Any], uids: set[str]) -> Iterator[str]:
    """Each panel shows queries of the provisioned datasource, and is placed."""
    ids = [panel.get("id") for panel in dashboard["panels"]]
    if len(set(ids)) != len(ids) or not dashboard.get("uid"):
        yield f"{where}: needs a uid and unique panel ids"
    for panel in (p for p in dashboard["panels"] if p.get("type") != "row"):
        title = f"{where}: panel {panel.get('title')!r}"
        if (panel.get("datasource") or {}).get("uid") not in uids:
            yield f"{title}: its datasource is not the provisioned one ({sorted(uids)})"
        if not panel.get("targets") or "gridPos" not in panel:
            yield f"{title}: has no queries or no gridPos"
        for target in panel.get("targets", []):
            if (target.get("datasource") or {}).get("uid") not in uids:
                yield f"{title}: query {target.get('refId')} has another datasource"


def grafana_errors(root: Path) -> Iterator[str]:
    provisioned = root / "deploy/grafana/provisioning/datasources"
    uids = {
        source["uid"]
        for path in provisioned.glob("*.yml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    }
    queries = []
    for path in sorted((root / "deploy/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        yield from panel_errors(path.name, dashboard, uids)
        for title, expr in dashboard_queries(dashboard):
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            if not expr.strip() or "$" in expr:
                yield f"{path.name}: panel {title!r}: empty query or unknown variable: {expr!r}"
            queries.append((f"{path.name}: panel {title!r}", expr))
    yield from promql_errors(queries)


# Kubernetes ---------------------------------------------------------------------------------


def kustomization_check(relative: str) -> Check:
    def check(root: Path) -> Iterator[str]:
        objects = k8s_manifests.render(root / "deploy/k8s" / relative)
        yield from k8s_manifests.schema_errors(objects)
        yield from k8s_manifests.reference_errors(objects)

    return check


def adapter_errors(root: Path) -> Iterator[str]:
    errors, queries = k8s_manifests.adapter_check(root)
    yield from errors
    yield from promql_errors(queries)


# Files kustomize needs beside its kustomization (it reads none outside): copy -> original.
COPIES = {
    "deploy/k8s/overlays/dev/initdb.sql": "deploy/postgres/initdb.sql",
    "deploy/k8s/components/pgbouncer/pgbouncer.ini": f"{PGBOUNCER_DIR}/pgbouncer.ini",
}


def copy_errors(root: Path) -> Iterator[str]:
    for copy, original in COPIES.items():
        if (root / copy).read_text() != (root / original).read_text():
            yield f"{copy} differs from {original}"


# PgBouncer -----------------------------------------------------------------------------------


def pgbouncer_configs(root: Path) -> dict[str, dict[str, str]]:
    """Every PgBouncer configuration shipped, by where it is: its files by name.

    Compose's directory as it is mounted, and each kustomization's ConfigMaps as rendered.
    """
    directory = root / PGBOUNCER_DIR
    found = {PGBOUNCER_DIR: {path.name: path.read_text() for path in directory.iterdir()}}
    for relative in k8s_manifests.KUSTOMIZATIONS:
        try:
            objects = k8s_manifests.render(root / "deploy/k8s" / relative)
        except ValueError:
            continue  # its own check says why
        files = {
            key: value
            for obj in objects
            if obj["kind"] == "ConfigMap"
            for key, value in (obj.get("data") or {}).items()
            if key.endswith((".ini", ".txt"))
        }
        if "pgbouncer.ini" in files:
            # The userlist is a Secret from the cluster's store: compose's stands in for it.
            found[f"deploy/k8s/{relative}"] = {
                "userlist.txt": found[PGBOUNCER_DIR]["userlist.txt"],
                **files,
            }
    return found


def _local(ini: str, home: Path, port: int) -> str:
    """ini listening on 127.0.0.1:port, with the files it names taken from home."""
    for key, value in (("listen_addr", "127.0.0.1"), ("listen_port", str(port))):
        ini, count = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", ini)
        if count != 1:
            raise ValueError(f"pgbouncer.ini: expected {key} exactly once")
    return ini.replace(f"{PGBOUNCER_MOUNT}/", f"{home}/")


def pgbouncer_start(files: dict[str, str]) -> list[str]:
    """Start Debian's pgbouncer on files (as mounted) until it listens; its errors if it cannot.

    PgBouncer has no dry run, but refuses to start on an unknown key or a bad value.
    """
    with tempfile.TemporaryDirectory(prefix="herald-pgbouncer-") as directory:
        home = Path(directory)
        home.chmod(0o755)  # as root, pgbouncer runs as nobody, who must read the files
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        for name, text in files.items():
            (home / name).write_text(_local(text, home, port) if name == "pgbouncer.ini" else text)
            (home / name).chmod(0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
        args = [tool("pgbouncer"), *user, str(home / "pgbouncer.ini")]
        popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        listening = _wait_listening(popen, port)
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)  # immediate shutdown
        output = popen.communicate(timeout=10)[0]
    if listening:
        return []
    problems = [line for line in output.splitlines() if " ERROR " in line or " FATAL " in line]
    return [f"pgbouncer: {line.split(']', 1)[-1].strip()}" for line in problems] or [
        f"pgbouncer did not listen: {output.strip()[-500:]}"
    ]


def _wait_listening(popen: subprocess.Popen[str], port: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while popen.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def pgbouncer_errors(root: Path) -> Iterator[str]:
    for where, files in pgbouncer_configs(root).items():
        missing = {"pgbouncer.ini", "databases.ini", "userlist.txt"} - set(files)
        if missing:
            yield f"{where}: no {', '.join(sorted(missing))} for PgBouncer"
            continue
        yield from (f"{where}: {error}" for error in pgbouncer_start(files))


CHECKS: dict[str, Check] = {
    "Dockerfile (BuildKit parser, targets, non-root, no build tools)": dockerfile_errors,
    "docker-compose.yml, alone and with each override (compose-spec JSON schema, references)": (
        compose_errors
    ),
    **{
        f"kubernetes {k} (kustomize, strict schemas, references)": kustomization_check(k)
        for k in k8s_manifests.KUSTOMIZATIONS
    },
    "sender HPA external metric vs prometheus-adapter rules": adapter_errors,
    "prometheus (promtool check config, test rules, scrape jobs)": prometheus_errors,
    "gateway (nginx -t)": gateway_errors,
    "grafana (dashboard panels, datasource, PromQL syntax)": grafana_errors,
    "pgbouncer (starts on compose's and each overlay's configuration)": pgbouncer_errors,
    "copies for kustomize (initdb.sql, pgbouncer.ini) agree": copy_errors,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    root = parser.parse_args(argv).root.resolve()
    failed = 0
    for title, check in CHECKS.items():
        try:
            errors = list(check(root))
        except Exception as crash:  # a missing file or tool, or a malformed one: a failure
            errors = [f"{type(crash).__name__}: {crash}"]
        print(f"{'FAIL' if errors else 'ok  '} {title}")
        for error in errors:
            print(f"       {error}")
        failed += bool(errors)
    verdict = f"{failed} of {len(CHECKS)} checks failed" if failed else "every check is ok"
    print(f"lint-deploy: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
