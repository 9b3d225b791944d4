"""Grafana dashboards as JSON, generated from the configuration (`lockmaster dashboards
generate`): one overview, and one per OpenStack provider region from a single template
(`region_dashboard`). Pure: configuration in, dashboards (dicts) out.

Several processes may serve the same state gauges (more than one orchestrator, or an
orchestrator and a web service): the expressions fold them with `max by (...)`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockmaster.config.models import LockmasterConfig, OpenStackProvider

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24  # Grafana's grid is 24 columns wide


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""


def _panel(panel: Panel, index: int, x: int, y: int, w: int = 12, h: int = 8
           ) -> dict[str, Any]:
    return {
        "id": index,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend} for i, (expr, legend) in enumerate(panel.exprs)],
    }


def _row(title: str, index: int, y: int) -> dict[str, Any]:
    return {"id": index, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1}, "panels": []}


def _dashboard(uid: str, title: str, rows: list[tuple[str, list[Panel]]],
               tags: list[str]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title_, row in rows:
        panels.append(_row(title_, len(panels) + 1, y))
        y += 1
        for i, panel in enumerate(row):
            panels.append(_panel(panel, len(panels) + 1, (i % 2) * 12, y + (i // 2) * 8))
        y += ((len(row) + 1) // 2) * 8
    return {
        "uid": uid,
        "title": title,
        "tags": ["lockmaster", *tags],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "utc",
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0,
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }


def _q90(metric: str, by: str, window: str = "15m", match: str = "") -> str:
    return (f"histogram_quantile(0.9, sum by (le, {by}) "
            f"(rate({metric}_bucket{match}[{window}])))")


def overview(config: LockmasterConfig) -> dict[str, Any]:
    queues = [
        Panel("Items per queue", (("max by (pipeline, queue) (lockmaster_queue_items)",
                                   "{{pipeline}} {{queue}}"),)),
        Panel("Oldest item's age", (("max by (pipeline, queue) "
                                     "(lockmaster_queue_oldest_item_age_seconds)",
                                     "{{pipeline}} {{queue}}"),), unit="s"),
        Panel("Resident time (p90)", ((_q90("lockmaster_queue_resident_seconds",
                                            "pipeline, queue", "1h"),
                                       "{{pipeline}} {{queue}}"),), unit="s",
              description="From entering a queue to leaving it (precise to the scrape "
                          "interval)."),
        Panel("Gate windows and failing items", (
            ("max by (queue) (lockmaster_queue_window)", "window {{queue}}"),
            ("max by (queue) (lockmaster_queue_failing_items)", "failing {{queue}}"))),
    ]
    builds = [
        Panel("Builds by result", (("sum by (result) (rate(lockmaster_builds_total[5m])) * 60",
                                    "{{result}}"),), unit="short",
              description="Builds finished per minute."),
        Panel("Job duration (p90) by job", ((_q90("lockmaster_job_duration_seconds",
                                                  "job_name", "1h"), "{{job_name}}"),), unit="s"),
        Panel("Event intake lag (p90)", ((_q90("lockmaster_event_intake_lag_seconds", "event",
                                               "10m"), "{{event}}"),), unit="s"),
        Panel("Events routed", (("sum by (event) (rate(lockmaster_events_total[5m])) * 60",
                                 "{{event}}"),), description="Events per minute."),
    ]
    nodes = [
        Panel("Nodes by state", (("sum by (state) (max by (provider, region, pool, state) "
                                  "(lockmaster_nodes))", "{{state}}"),)),
        Panel("Nodes in use against quota", (
            ("sum by (provider, region) (max by (provider, region, pool) "
             "(lockmaster_nodes{state!=\"hold\"}))", "nodes {{provider}} {{region}}"),
            ("sum by (provider, region) (max by (provider, region, pool) "
             "(lockmaster_pool_max_servers))", "max {{provider}} {{region}}"))),
        Panel("Pending node requests", (
            ("sum by (provider, pool) (max by (provider, region, pool, state) "
             "(lockmaster_node_requests{state=\"pending\"}))", "{{provider}}/{{pool}}"),)),
        Panel("Launch errors by provider and region", (
            ("sum by (provider, region, reason) (rate(lockmaster_node_launch_errors_total[15m]))"
             " * 60", "{{provider}} {{region}} {{reason}}"),),
              description="Failed launches per minute."),
    ]
    tes = [
        Panel("Test environments by state", (("max by (label, state) "
                                              "(lockmaster_te_environments)",
                                              "{{label}} {{state}}"),)),
        Panel("TE lease waits", (
            ("max by (label) (lockmaster_te_waiting_leases)", "waiting {{label}}"),
            ("max by (label) (lockmaster_te_oldest_wait_seconds)", "oldest wait (s) {{label}}"))),
    ]
    publishing = [
        Panel("Publication latency (p90)", ((_q90("lockmaster_publication_seconds", "result",
                                                  "1h"), "{{result}}"),), unit="s"),
        Panel("Mirror sync latency (p90)", ((_q90("lockmaster_mirror_sync_seconds", "mirror",
                                                  "1h"), "{{mirror}}"),), unit="s"),
        Panel("Publish queues", (("max by (repository, state) "
                                  "(lockmaster_publish_queue_entries)",
                                  "{{repository}} {{state}}"),)),
    ]
    temporal = [
        Panel("Workers up", (("up{job=\"lockmaster\"}", "{{instance}}"),)),
        Panel("Workflow task schedule-to-start (p90)", (
            (_q90("temporal_workflow_task_schedule_to_start_latency", "task_queue", "5m"),
             "{{task_queue}}"),), unit="s",
              description="Rising: workflow tasks wait for a worker (backlog)."),
        Panel("Activity schedule-to-start (p90)", (
            (_q90("temporal_activity_schedule_to_start_latency", "task_queue", "5m"),
             "{{task_queue}}"),), unit="s"),
        Panel("Temporal requests failing", (
            ("sum by (operation) (rate(temporal_request_failure_total[5m]))",
             "{{operation}}"),)),
        Panel("Workflows not answering the scrape", (
            ("max by (kind) (lockmaster_workflows_unanswered)", "{{kind}}"),)),
    ]
    return _dashboard("lockmaster-overview", "lockmaster overview", [
        ("Queues", queues), ("Builds and events", builds), ("Nodes", nodes),
        ("Test environments", tes), ("Publishing", publishing),
        ("Workers and Temporal", temporal)], ["overview"])


def region_dashboard(provider: str, region: str) -> dict[str, Any]:
    """The one template of every provider region's dashboard."""
    match = f'provider="{provider}", region="{region}"'
    where = "{" + match + "}"
    panels = [
        Panel("Nodes by state", (("max by (pool, state) (lockmaster_nodes" + where + ")",
                                  "{{pool}} {{state}}"),)),
        Panel("Nodes against quota", (
            ("sum by (pool) (max by (pool, state) (lockmaster_nodes{" + match
             + ", state!=\"hold\"}))", "nodes {{pool}}"),
            ("max by (pool) (lockmaster_pool_max_servers" + where + ")", "max {{pool}}"))),
        Panel("Launches by outcome", (("sum by (result) (rate(lockmaster_node_launches_total"
                                       + where + "[15m])) * 60", "{{result}}"),),
              description="Launch attempts per minute."),
        Panel("Launch time (p50, p90)", (
            ("histogram_quantile(0.5, sum by (le) (rate(lockmaster_node_launch_seconds_bucket"
             + where + "[30m])))", "p50"),
            ("histogram_quantile(0.9, sum by (le) (rate(lockmaster_node_launch_seconds_bucket"
             + where + "[30m])))", "p90")), unit="s"),
        Panel("Launch errors by reason", (
            ("sum by (reason) (rate(lockmaster_node_launch_errors_total" + where
             + "[15m])) * 60", "{{reason}}"),)),
        Panel("Node requests", (
            ("max by (pool, state) (lockmaster_node_requests{" + match
             + ", state=~\"pending|fulfilled\"})", "{{pool}} {{state}}"),
            ("max by (pool) (lockmaster_node_request_oldest_pending_age_seconds" + where + ")",
             "oldest pending (s) {{pool}}"))),
        Panel("Quota backoff and enabled", (
            ("max by (pool) (lockmaster_pool_quota_paused" + where + ")", "paused {{pool}}"),
            ("max by (pool) (lockmaster_pool_enabled" + where + ")", "enabled {{pool}}"))),
    ]
    slug = _slug(f"{provider}-{region}" if region else provider)
    title = f"lockmaster {provider} {region}".strip()
    return _dashboard(f"lockmaster-region-{slug}"[:40], title,
                      [(f"{provider} {region}".strip(), panels)], ["region"])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def provider_regions(config: LockmasterConfig) -> list[tuple[str, str]]:
    return sorted({(p.name, p.region or "") for p in config.nodes.providers
                   if isinstance(p, OpenStackProvider)})


def generate(config: LockmasterConfig) -> dict[str, dict[str, Any]]:
    """File name -> dashboard: overview.json and region-<provider>-<region>.json."""
    out = {"overview.json": overview(config)}
    for provider, region in provider_regions(config):
        name = _slug(f"{provider}-{region}" if region else provider)
        out[f"region-{name}.json"] = region_dashboard(provider, region)
    return out


def write(config: LockmasterConfig, directory: Path) -> list[Path]:
    """Write the dashboards; region files of regions no longer configured are removed (they
    were generated: a hand-made file has another name)."""
    directory.mkdir(parents=True, exist_ok=True)
    dashboards = generate(config)
    for stale in directory.glob("region-*.json"):
        if stale.name not in dashboards:
            stale.unlink()
    written = []
    for name, dashboard in dashboards.items():
        path = directory / name
        path.write_text(json.dumps(dashboard, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels (the tests check their metric names)."""
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
