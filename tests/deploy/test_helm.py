"""The Helm chart: lint, render, validate every object, and run the agent's own validator on its config.

Built-in kinds go through ``kubernetes-validate --strict`` (bundled OpenAPI
schemas, offline) for the oldest Kubernetes the chart supports and the newest
one bundled. kubernetes-validate has no schemas for Prometheus Operator CRDs:
it warns and passes them, so the test checks that only ServiceMonitor and
PrometheusRule were skipped, then validates those two against the subset of
the monitoring.coreos.com/v1 schema the chart uses (``additionalProperties:
false`` at every level) and puts the PrometheusRule's groups through
``promtool check rules``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agent import __version__
from tests.conftest import REPO_ROOT, require_tool
from tests.deploy import chart_schema
from tests.deploy.conftest import CHART, DEPLOY, feedagent_cmd, run, venv_tool

pytestmark = pytest.mark.tool

K8S_VERSIONS = ("1.25.0", "1.37.0")  # Chart.yaml kubeVersion floor, newest schema kubernetes-validate bundles
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
VALUE_SETS = {
    "default": None,
    "monitoring": CHART / "ci" / "monitoring-values.yaml",
    "existing-secret": CHART / "ci" / "existing-secret-values.yaml",
    "persistence": CHART / "ci" / "persistence-values.yaml",
}
# Dummy values for every variable the value sets' configs name (feedagent validate resolves them).
DUMMY_SECRETS = {"BYBIT_API_KEY": "k" * 18, "BYBIT_API_SECRET": "s" * 36, "BINANCE_API_KEY": "k" * 64,
                 "BINANCE_API_SECRET": "s" * 64, "FEEDAGENT_ADMIN_TOKEN": "t" * 32}

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"type": "object", "additionalProperties": False, "required": ["name"],
         "properties": {"name": {"type": "string"}, "labels": _STR_MAP, "annotations": _STR_MAP}}
_DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
# The fields of monitoring.coreos.com/v1 the chart emits, with their upstream types.
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {"type": "object", "additionalProperties": False,
                                 "properties": {"matchLabels": _STR_MAP}},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False, "required": ["port"],
                        "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                       "interval": _DURATION, "scrapeTimeout": _DURATION}}},
                }},
        }},
    "PrometheusRule": {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
            "metadata": _META,
            "spec": {
                "type": "object", "additionalProperties": False, "required": ["groups"],
                "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "additionalProperties": False, "required": ["expr"],
                            "properties": {
                                "alert": {"type": "string"}, "record": {"type": "string"},
                                "expr": {"type": ["string", "integer"]}, "for": _DURATION,
                                "keep_firing_for": _DURATION, "labels": _STR_MAP, "annotations": _STR_MAP}}}}}}}},
        }},
}


def render(helm, *args: str | Path) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = helm("template", "release-x", CHART, *args)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def values_args(name: str) -> list[str | Path]:
    path = VALUE_SETS[name]
    return [] if path is None else ["-f", path]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def rendered_config(docs: list[dict[str, Any]]) -> str:
    config_maps = [d for d in docs if d["kind"] == "ConfigMap" and "feedagent.yaml" in d.get("data", {})]
    assert len(config_maps) == 1
    return config_maps[0]["data"]["feedagent.yaml"]


# -- the chart's metadata and shared files ---------------------------------------------------------


def test_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert chart["appVersion"] == __version__ == pyproject["project"]["version"]
    assert chart["apiVersion"] == "v2"


def test_values_schema_is_in_sync_with_the_config_models():
    assert chart_schema.main(["--check"]) == 0, "run: python -m tests.deploy.chart_schema --write"


def test_values_schema_is_strict_at_every_level_it_defines():
    schema = json.loads((CHART / "values.schema.json").read_text())
    free = {"/properties/global", "/properties/affinity", "/properties/tolerations/items",
            "/properties/extraEnv/items/properties/valueFrom"}  # Kubernetes' own types, not ours to restate
    loose = []

    def walk(node: Any, at: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and at not in free:
                if "properties" in node and node.get("additionalProperties") is not False:
                    loose.append(at)
                if "properties" not in node and "additionalProperties" not in node and "$ref" not in node:
                    loose.append(at)
            for key, value in node.items():
                walk(value, f"{at}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{at}/{index}")

    walk(schema, "")
    assert not loose, f"objects that accept unknown keys: {loose}"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["config"]["additionalProperties"] is False


@pytest.mark.parametrize(("link", "target"), [("files/rules.yml", "prometheus/rules.yml"),
                                              ("files/dashboard.json", "grafana/feedagent.json")])
def test_chart_ships_the_same_rules_and_dashboard(link, target):
    path = CHART / link
    assert path.is_symlink(), f"{link} must be a symlink to deploy/{target} (one copy of the content)"
    assert path.resolve() == (DEPLOY / target).resolve()
    assert path.read_bytes() == (DEPLOY / target).read_bytes()


def test_dashboard_is_a_grafana_dashboard():
    dashboard = json.loads((DEPLOY / "grafana" / "feedagent.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] for p in dashboard["panels"])


def test_rules_pass_promtool_and_link_the_runbook():
    promtool = require_tool("promtool")
    rules = DEPLOY / "prometheus" / "rules.yml"
    out = run([promtool, "check", "rules", str(rules)])
    assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load(rules.read_text())
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} >= {"FeedAgentDown", "FeedAgentAbsent"}
    for alert in alerts:
        assert alert["annotations"]["runbook_url"] == f"RUNBOOK.md#{alert['alert'].lower()}"


# -- lint, render and validate each value set ----------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(helm, value_set):
    out = helm("lint", "--strict", CHART, *values_args(value_set))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_objects_pass_kubernetes_validate_strict(helm, value_set, tmp_path):
    kubernetes_validate = venv_tool("kubernetes-validate")
    docs = render(helm, *values_args(value_set))
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    builtin = [d for d in docs if d["kind"] not in CRD_KINDS]
    for version in K8S_VERSIONS:
        out = run([kubernetes_validate, "--strict", "-k", version, str(manifest)])
        assert out.returncode == 0, out.stdout + out.stderr
        log = out.stdout + out.stderr
        assert "ERROR" not in log
        passed = re.findall(r"passed for resource (\S+)", log)
        assert len(passed) == len(builtin), log
        skipped = set(re.findall(r"Couldn't find schema for kind (\w+)", log))
        assert skipped == {d["kind"] for d in docs} & CRD_KINDS, log
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_config_passes_feedagent_validate(helm, value_set, tmp_path):
    config = tmp_path / "feedagent.yaml"
    config.write_text(rendered_config(render(helm, *values_args(value_set))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDAGENT_")}  # no overrides from the caller
    out = run(feedagent_cmd("validate", "-c", str(config)), env={**env, **DUMMY_SECRETS})
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""


def test_default_deployment_is_a_hardened_singleton(helm):
    docs = render(helm)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["args"] == ["run", "-c", "/etc/feedagent/feedagent.yaml"]
    assert container["workingDir"] == "/var/lib/feedagent"
    assert container["ports"] == [{"name": "admin", "containerPort": 9464, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "admin"}
    assert container["startupProbe"]["httpGet"] == {"path": "/-/healthy", "port": "admin"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/feedagent"]["readOnly"] is True and "/var/lib/feedagent" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    assert "envFrom" not in container, "no Secret without secret values"
    annotations = spec["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 9464


def test_config_checksum_follows_the_config(helm):
    def checksum(*args: str) -> str:
        deploy = one(render(helm, *args), "Deployment")
        return deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert checksum() == base
    assert checksum("--set", "config.exchanges.demo.mode=hybrid") != base
    assert checksum("--set", "image.tag=9.9.9") == base


def test_admin_port_comes_from_the_config(helm):
    docs = render(helm, "--set", "config.admin.listen=0.0.0.0:9500")
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 9500
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 9500


def test_existing_secret(helm):
    docs = render(helm, *values_args("existing-secret"))
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart must not create a Secret"
    deploy = one(docs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "feedagent-main-keys"}}]
    assert [e["name"] for e in container["env"]] == ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
    assert container["image"].startswith("registry.example.com/feedagent@sha256:")
    assert "checksum/secret" not in deploy["spec"]["template"]["metadata"]["annotations"]
    config = yaml.safe_load(rendered_config(docs))
    assert set(config["exchanges"]) == {"bybit-main", "binance-main"}, "demo: null removes the demo exchange"


def test_created_secret_and_persistence(helm):
    docs = render(helm, *values_args("persistence"))
    secret = one(docs, "Secret")
    assert set(secret["data"]) == {"FEEDAGENT_ADMIN_TOKEN"}
    deploy = one(docs, "Deployment")
    pod = deploy["spec"]["template"]
    assert "checksum/secret" in pod["metadata"]["annotations"]
    (container,) = pod["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    existing = render(helm, "--set", "persistence.enabled=true", "--set", "persistence.existingClaim=my-claim")
    assert not [d for d in existing if d["kind"] == "PersistentVolumeClaim"]
    pod_volumes = {v["name"]: v for v in one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert pod_volumes["state"]["persistentVolumeClaim"]["claimName"] == "my-claim"


def test_monitoring_objects(helm):
    promtool = require_tool("promtool")
    docs = render(helm, *values_args("monitoring"))
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    service = one(docs, "Service")
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "feedagent", "job=\"feedagent\""
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    rule = one(docs, "PrometheusRule")
    shared = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    for got, want in zip(rule["spec"]["groups"], shared["groups"], strict=True):
        for got_rule, want_rule in zip(got["rules"], want["rules"], strict=True):
            url = want_rule["annotations"]["runbook_url"]
            assert got_rule["annotations"]["runbook_url"] == "https://git.example.com/feedagent/blob/main/" + url
            assert {**got_rule, "annotations": {}} == {**want_rule, "annotations": {}}
    assert "{{ $labels.instance }}" in json.dumps(rule), "alert templates reach Prometheus untouched"
    out = run([promtool, "check", "rules", "/dev/stdin"], input=yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    assert out.returncode == 0, out.stdout + out.stderr
    dashboard = one(docs, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["feedagent.json"]) == json.loads(
        (DEPLOY / "grafana" / "feedagent.json").read_text())


def test_package_embeds_the_shared_files(helm, tmp_path):
    out = helm("package", CHART, "--destination", tmp_path)
    assert out.returncode == 0, out.stderr
    (archive,) = tmp_path.glob("feedagent-*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        rules = tar.extractfile("feedagent/files/rules.yml")
        assert rules is not None and rules.read() == (DEPLOY / "prometheus" / "rules.yml").read_bytes()
        assert tar.getmember("feedagent/files/rules.yml").isfile()
    assert not [n for n in names if n.startswith("feedagent/ci/")]
    assert "feedagent/values.schema.json" in names


# -- what must fail --------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "complaint"), [
    ("imagee.tag=1", "additional properties 'imagee' not allowed"),
    ("serviceMonitor.intervall=1m", "additional properties 'intervall' not allowed"),
    ("config.exchanges.demo.rset.positions_interval_seconds=1", "additional properties 'rset' not allowed"),
    ("config.exchanges.demo.mode=websocket", "/config/exchanges/demo/mode"),
    ("config.agent.shutdown_timeout_seconds=600", "/config/agent/shutdown_timeout_seconds"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("probes.liveness.periodSeconds=0", "/probes/liveness/periodSeconds"),
])
def test_schema_rejects_typos_and_bad_values(helm, setting, complaint):
    for command in ("lint", "template"):
        args = ["--strict"] if command == "lint" else []
        out = helm(command, *args, CHART, "--set", setting)
        assert out.returncode != 0, f"helm {command} accepted {setting}"
        assert complaint in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize(("args", "complaint"), [
    (["--set", "config.admin.listen=127.0.0.1:9464"], "cannot reach a loopback address"),
    (["--set", "config.admin.listen=0.0.0.0:0"], "needs a fixed port"),
    (["--set", "secret.existingSecret=x", "--set", "secret.values.A=b"], "set only one of secret.existingSecret"),
    (["--set", "config.exchanges.live.venue=bybit", "--set", "config.exchanges.live.environment=simulator"],
     "remove it with `demo: null`"),
    (["--set", "config.exchanges.demo=null", "--set", "config.exchanges.live.venue=bybit",
      "--set", "config.exchanges.live.environment=mainnet",
      "--set", "config.exchanges.live.credentials.api_key_env=LIVE_KEY",
      "--set", "config.exchanges.live.credentials.api_secret_env=LIVE_SECRET",
      "--set", "secret.values.LIVE_KEY=x"],
     "credentials.api_secret_env names LIVE_SECRET"),
])
def test_render_refuses_what_the_schema_cannot_see(helm, args, complaint):
    out = helm("template", "release-x", CHART, *args)
    assert out.returncode != 0
    assert complaint in out.stderr, out.stderr


def test_broken_template_fails_lint(helm, tmp_path):
    chart = tmp_path / "feedagent"
    shutil.copytree(CHART, chart, symlinks=False)
    assert (helm("lint", "--strict", chart)).returncode == 0
    (chart / "templates" / "broken.yaml").write_text("kind: ConfigMap\nvalue: {{ .Values.image.tag }\n")
    out = helm("lint", "--strict", chart)
    assert out.returncode != 0
    assert "parse error" in out.stdout + out.stderr and "broken.yaml" in out.stdout + out.stderr
    assert helm("template", "x", chart).returncode != 0



def test_notes_tell_how_to_reach_status_flip_modes_and_read_logs(helm):
    out = helm("install", "bybit-main", CHART, "--dry-run=client", "--namespace", "trading",
               *values_args("existing-secret"))
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "port-forward svc/bybit-main-feedagent 9464:9464" in notes
    assert "/status" in notes and "feedagent mode <name> rest" in notes
    assert "kubectl -n trading logs deploy/bybit-main-feedagent" in notes
    assert "Exchanges: binance-main, bybit-main" in notes
    assert "No Secret is configured" not in notes
