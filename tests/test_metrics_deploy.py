"""The deployment's Prometheus files: promtool accepts them; every alert has a summary and a
one-line runbook; every metric the alerts and the generated dashboards name is one lockmaster
exports (or the Temporal SDK's, or Prometheus's own `up`); the committed dashboards are what
`lockmaster dashboards generate` makes of production.yaml; compose runs Prometheus and Grafana
with them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from lockmaster.cli.main import app
from lockmaster.config.loader import load_config
from lockmaster.metrics.dashboards import exprs, generate
from lockmaster.metrics.domain import DomainMetrics
from lockmaster.metrics.temporal_sdk import USED_SDK_METRICS

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
PRODUCTION = ROOT / "lockmaster" / "config" / "examples" / "production.yaml"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "offset", "bool"}
SDK_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers not followed by `(` (functions), not
    inside quotes or label matchers or by/on lists, not PromQL keywords."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in PROMQL_WORDS or word[0].isdigit():
            continue
        names.add(word)
    return names


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def rule_exprs() -> list[str]:
    return [r["expr"] for r in rules()]


def known(name: str, exported: set[str]) -> bool:
    if name.startswith("lockmaster_"):
        return name in exported
    if name.startswith("temporal_"):
        base = next((name[: -len(s)] for s in SDK_SUFFIXES if name.endswith(s)), name)
        return base in USED_SDK_METRICS
    return name == "up"


def test_metric_names_reads_expressions() -> None:
    assert metric_names('max by (pipeline, queue) (lockmaster_queue_items{x="a_b"}) > 0 and '
                        "on (q) increase(lockmaster_x_count[1h])") == {
        "lockmaster_queue_items", "lockmaster_x_count"}
    assert metric_names("histogram_quantile(0.9, sum by (le) (rate(a_bucket[5m]))) > 4 * 3600"
                        ) == {"a_bucket"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) "
                    "is not installed: scripts/setup --test")
def test_promtool_accepts_the_rules_and_the_config() -> None:
    for args in (["check", "rules", str(ALERTS)], ["check", "config", str(PROMETHEUS)]):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr


def test_every_alert_has_a_summary_and_a_one_line_runbook() -> None:
    found = rules()
    assert len(found) >= 8
    names = {r["alert"] for r in found}
    for wanted in ("LockmasterGateStalled", "LockmasterOldestItemTooOld",
                   "LockmasterNodeLaunchErrors", "LockmasterQuotaExhausted",
                   "LockmasterTEQuarantined", "LockmasterMirrorSyncSlow",
                   "LockmasterWorkerDown", "LockmasterWorkflowTaskBacklog"):
        assert wanted in names
    for rule in found:
        notes = rule["annotations"]
        assert notes["summary"].strip(), rule["alert"]
        runbook = notes["runbook"].strip()
        assert runbook and "\n" not in runbook, f"{rule['alert']}: one line of runbook"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_alerts_name_only_exported_metrics() -> None:
    exported = DomainMetrics(CollectorRegistry()).names()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = {n for n in names if not known(n, exported)}
        assert not unknown, f"{rule['alert']}: {unknown} is not exported"


def test_an_unknown_name_is_caught() -> None:
    # The check above can fail: a misspelt metric is not "known".
    exported = DomainMetrics(CollectorRegistry()).names()
    assert not known("lockmaster_queue_item", exported)
    assert not known("temporal_workflow_task_latency_bucket", exported)
    assert known("lockmaster_queue_resident_seconds_count", exported)


def test_generated_dashboards_are_grafana_json_with_exported_metrics() -> None:
    config = load_config(PRODUCTION)
    dashboards = generate(config)
    assert set(dashboards) == {"overview.json", "region-donor-cloud-regionone.json"}
    exported = DomainMetrics(CollectorRegistry()).names()
    for name, dashboard in dashboards.items():
        assert dashboard["schemaVersion"] >= 30 and dashboard["uid"] and dashboard["title"]
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels, name
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in panels:
            assert panel["targets"], f"{name}: {panel['title']}"
            for target in panel["targets"]:
                assert target["datasource"]["type"] == "prometheus"
                unknown = {n for n in metric_names(target["expr"]) if not known(n, exported)}
                assert not unknown, f"{name}: {panel['title']}: {unknown}"
    region = dashboards["region-donor-cloud-regionone.json"]
    assert all('provider="donor-cloud", region="RegionOne"' in e for e in exprs(region))


def test_committed_dashboards_are_the_generated_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "generate", "-c", str(PRODUCTION),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name in made:
        assert json.loads((tmp_path / name).read_text()) == json.loads(
            (DASHBOARDS / name).read_text()), f"{name}: run `lockmaster dashboards generate "\
            f"-c {PRODUCTION.relative_to(ROOT)}` and commit the result"


def test_dashboards_generate_refuses_a_file_as_out(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["dashboards", "generate", "-c", str(PRODUCTION),
                                      "--out", str(target)])
    assert result.exit_code == 2
    assert "not a directory" in result.output
    assert target.read_text() == "x"


def test_compose_runs_prometheus_and_grafana_with_these_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    grafana = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert grafana["./deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    assert "./deploy/grafana/provisioning" in grafana
    # Every scrape target is a service serving metrics on the port the config names.
    config = load_config(PRODUCTION)
    targets = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"][0]["static_configs"][0]
    for target in targets["targets"]:
        host, port = target.split(":")
        assert host in services, target
        assert int(port) == config.metrics.port
