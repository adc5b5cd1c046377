"""`make lint-deploy` passes on the project's files and fails on broken copies of them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LINT = ROOT / "scripts" / "lint_deploy.py"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LINT), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """What lint-deploy reads, copied: Dockerfile, the compose files, deploy/."""
    shutil.copy(ROOT / "Dockerfile", tmp_path)
    for compose in ROOT.glob("docker-compose*.yml"):
        shutil.copy(compose, tmp_path)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_prod_overlay_scales_the_sender_on_the_waiting_send_queue() -> None:
    kubectl = Path(sys.executable).parent / "kubectl"
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "deploy/k8s/overlays/prod")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (hpa,) = (
        obj
        for obj in yaml.safe_load_all(rendered)
        if obj["kind"] == "HorizontalPodAutoscaler" and obj["metadata"]["name"] == "sender"
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sender"
    assert hpa["spec"]["minReplicas"] >= 1
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"] == {
        "name": "herald_queue_messages",
        "selector": {"matchLabels": {"queue": "send", "state": "waiting"}},
    }


def test_the_deployment_files_pass(copy: Path) -> None:
    done = lint(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout


# Each breakage, and the words of the failure it must cause.
BREAKAGES = [
    # A typo in a field: only strict schema validation of the rendered overlays sees it.
    ("deploy/k8s/base/api.yaml", "  revisionHistoryLimit: 5", "  revisionHistoryLimt: 5",
     "'revisionHistoryLimt' was unexpected"),
    # Valid YAML and schema, wrong reference.
    ("deploy/k8s/base/status.yaml", "      targetPort: http", "      targetPort: htp",
     "Service/status: targetPort 'htp' is no port of its pods"),
    # The adapter no longer serves the metric the HPA asks for.
    ("deploy/k8s/monitoring/adapter-config.yaml", "as: herald_queue_messages", "as: herald_backlog",
     "overlays/dev: External metric herald_queue_messages is served by no adapter rule"),
    # The sender would scale on retries in backoff instead of the waiting backlog.
    ("deploy/k8s/base/sender.yaml", "              state: waiting", "              state: delayed",
     "no HPA scales Deployment/sender on ('herald_queue_messages'"),
    # A kustomization naming a file that is not there.
    ("deploy/k8s/overlays/prod/kustomization.yaml", "  - path: spread.yaml", "  - path: sprad.yaml",
     "sprad.yaml"),
    ("docker-compose.yml", "    stop_grace_period: 15s", "    stop_grace_periods: 15s",
     "'stop_grace_periods' does not match"),
    ("deploy/prometheus/alerts.yml", "> 5000", "> > 5000", "could not parse expression"),
    ("deploy/gateway/nginx.conf", "proxy_next_upstream off;", "proxy_next_upstreem off;",
     'unknown directive "proxy_next_upstreem"'),
    ("deploy/grafana/dashboards/herald.json", "sum by (state) (", "sum by (state (",
     "panel 'Send queue depth': could not parse expression"),
    ("Dockerfile", "USER 10001:10001", "USER root", "api: the image runs as root"),
    # The sender's image built from a virtualenv holding the api too.
    ("Dockerfile", "--no-editable --package herald-sender", "--no-editable",
     "sender: 'build-sender' syncs the whole workspace, not --package herald-sender"),
]  # fmt: skip
# The pooler's files, broken in a copy of their own: overlays/prod-pgbouncer builds on
# overlays/prod, which BREAKAGES leaves unrenderable.
POOLER_BREAKAGES = [
    # PgBouncer refuses to start on a value (or a key) it does not know.
    ("deploy/pgbouncer/pgbouncer.ini", "pool_mode = transaction", "pool_mode = transactional",
     'deploy/pgbouncer: pgbouncer: ERROR invalid value "transactional" for parameter pool_mode'),
    ("deploy/k8s/components/pgbouncer/pgbouncer.ini", "max_db_connections =",
     "max_db_connection =", "prod-pgbouncer: pgbouncer: ERROR unknown parameter"),
    ("deploy/k8s/components/pgbouncer/pgbouncer.ini", "query_wait_timeout = 4",
     "query_wait_timeout = 3", "components/pgbouncer/pgbouncer.ini differs from"),
    # The sweeper's advisory lock through a transaction pooler: leadership would mean nothing.
    ("docker-compose.pgbouncer.yml", "herald:herald@postgres:5432/herald",
     "herald:herald@pgbouncer:6432/herald",
     "sender: behind PgBouncer, needs HERALD_DATABASE_SESSION_URL past it"),
    ("deploy/k8s/components/pgbouncer/pooled.yaml", "- name: HERALD_DATABASE_SESSION_URL",
     "- name: HERALD_DATABASE_SESSION", "Deployment/sender: behind PgBouncer, needs"),
    # A projected volume's source is checked like any ConfigMap a pod uses.
    ("deploy/k8s/components/pgbouncer/pgbouncer.yaml", "name: pgbouncer-databases\n",
     "name: pgbouncer-database\n", "uses ConfigMap pgbouncer-database, which is not here"),
]  # fmt: skip


@pytest.mark.parametrize("breakages", [BREAKAGES, POOLER_BREAKAGES], ids=["all", "pooler"])
def test_every_kind_of_broken_file_fails_and_is_named(
    copy: Path, breakages: list[tuple[str, str, str, str]]
) -> None:
    for relative, old, new, _ in breakages:
        edit(copy / relative, old, new)
    done = lint(copy)
    assert done.returncode == 1, done.stdout + done.stderr
    for relative, _, _, message in breakages:
        assert message in done.stdout, f"breaking {relative}: {message!r} not in\n{done.stdout}"
