"""A real Prometheus scrapes the running services; every query we ship must return data.

"Every query" is each PromQL expression of the Grafana dashboard, and the query
prometheus-adapter runs for the sender HPA (its rule from deploy/k8s/monitoring, the HPA's
selector from the rendered prod overlay). The alert rules must at least evaluate.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from herald.core.settings import Settings
from tests.deploy.servers import DEPLOY, prometheus, query
from tests.stack import HTTP, Stack, running_stack, wait_for

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "herald.json"
# Grafana fills $__rate_interval in; a minute spans all of this test's traffic.
RATE_WINDOW = "1m"


def dashboard_queries() -> dict[str, str]:
    """Every query of the dashboard, by panel title and refId."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": target["expr"].replace(
            "$__rate_interval", RATE_WINDOW
        )
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization, rendered by the pinned kubectl beside this Python."""
    kubectl = Path(sys.executable).parent / "kubectl"
    done = subprocess.run(
        [str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, check=True
    )
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def autoscaling_queries() -> dict[str, str]:
    """What prometheus-adapter asks Prometheus for each External metric of the prod HPAs."""
    config = next(
        obj for obj in kustomize(DEPLOY / "k8s" / "monitoring") if obj["kind"] == "ConfigMap"
    )
    rules = {
        rule["name"]["as"]: rule
        for rule in yaml.safe_load(config["data"]["config.yaml"])["externalRules"]
    }
    queries = {}
    for hpa in kustomize(DEPLOY / "k8s" / "overlays" / "prod"):
        if hpa["kind"] != "HorizontalPodAutoscaler":
            continue
        for metric in (
            m["external"]["metric"] for m in hpa["spec"]["metrics"] if m["type"] == "External"
        ):
            rule = rules[metric["name"]]
            # The adapter's template, filled in as it does for an HPA in namespace "herald".
            labels = {
                "namespace": hpa["metadata"]["namespace"],
                **metric["selector"]["matchLabels"],
            }
            matchers = ",".join(f'{key}="{value}"' for key, value in labels.items())
            series = rule["seriesQuery"].split("{")[0]
            expr = (
                rule["metricsQuery"]
                .replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", matchers)
                .replace("<<.GroupBy>>", "")
            )
            queries[f"HPA {hpa['metadata']['name']} / {metric['name']}"] = expr
    return queries


def alert_queries() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def configure_provider(stack: Stack, **knobs: object) -> None:
    answer = HTTP.put(f"{stack.provider}/config", json=knobs)
    assert answer.status_code == 200, answer.text


def post(stack: Stack, body: str) -> str:
    return stack.post(body)


def traffic(stack: Stack, prometheus_url: str) -> None:
    """Sends in two rounds, a retried send (503 twice), a permanent failure (400), status reads.

    A labelled series is born at its first observation; for its rate to be more than zero, a
    later scrape must see it grow: hence two rounds, each followed by a scrape of every target.
    """
    for round_ in range(2):
        sent = [post(stack, f"round {round_} message {i}") for i in range(5)]
        for message_id in sent:
            stack.wait_status(message_id, "sent")
        wait_for_scrape(prometheus_url)
    configure_provider(stack, fail_status=503, fail_next=2)
    retried = post(stack, "retried")
    stack.wait_status(retried, "sent")
    configure_provider(stack, fail_status=400, fail_next=1)
    failed = post(stack, "rejected")
    stack.wait_status(failed, "failed")


def has_data(result: list[dict[str, Any]]) -> bool:
    """Some series, and a number in at least one (a histogram over no observations is NaN)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


def test_every_dashboard_and_autoscaling_query_returns_data(settings: Settings) -> None:
    queries = {**dashboard_queries(), **autoscaling_queries()}
    assert any(name.startswith("HPA sender") for name in queries)
    # The backlog gauges appear after the leading sweeper's first cycle.
    with running_stack(settings.model_copy(update={"sweep_interval": 1.0})) as stack:
        targets = {
            "api": stack.api.removeprefix("http://"),
            "status": stack.status.removeprefix("http://"),
            "sender": f"127.0.0.1:{stack.settings.sender_metrics_port}",
        }
        with prometheus(targets) as url:
            # Prometheus hands new targets to its scrapers every few seconds: wait for all.
            wait_for(lambda: _all_up(url, len(targets) + 1), 30, "every target scraped")
            traffic(stack, url)

            def missing() -> list[str]:
                return [name for name, expr in queries.items() if not has_data(query(url, expr))]

            try:
                wait_for(lambda: not missing(), 30, "every query to return data", 0.5)
            except AssertionError:
                raise AssertionError(f"no data for: {missing()}\n{stack.logs()}") from None
            for expr in alert_queries().values():
                query(url, expr)  # evaluates without error (an alert firing is not expected)


def wait_for_scrape(prometheus_url: str) -> None:
    """Return once Prometheus has scraped every target after this call."""
    now = datetime.now(UTC)
    wait_for(lambda: _scraped_since(prometheus_url, now), 30, "a scrape of every target")


def _scraped_since(prometheus_url: str, moment: datetime) -> bool:
    """Every target scraped successfully after moment (the scrape that began after it)."""
    targets = HTTP.get(f"{prometheus_url}/api/v1/targets").json()["data"]["activeTargets"]
    return all(
        target["health"] == "up" and _instant(target["lastScrape"]) > moment for target in targets
    )


def _instant(rfc3339: str) -> datetime:
    # Prometheus writes nanoseconds; datetime keeps microseconds.
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", rfc3339))


def _all_up(prometheus_url: str, count: int) -> bool:
    """count targets (the services and Prometheus itself), each scraped successfully."""
    targets = HTTP.get(f"{prometheus_url}/api/v1/targets").json()["data"]["activeTargets"]
    return len(targets) == count and all(target["health"] == "up" for target in targets)
