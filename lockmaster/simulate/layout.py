"""The layout a scenario runs (the pipelines/projects/jobs part of lockmaster.yaml) and the whole
configuration a simulation runs with around it.

Keys that mean nothing in a simulation may be left out of a scenario's layout: a project's
`connection` (the simulated Gerrit), a job's `run` (nothing runs) and node labels (every label a
job names is served).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from lockmaster.config.models import LockmasterConfig

# The connection name of the simulated Gerrit, when the layout's projects name none.
SIM_CONNECTION = "gerrit"
SIM_LOGS_URL = "https://logs.simulation.invalid"

# spec/scenarios.md, "Default layout".
DEFAULT_LAYOUT_YAML = r"""
pipelines:
  - name: check
    manager: independent
    description: Newly uploaded patchsets get an initial Verified vote.
    trigger:
      - event: patchset-created
      - event: comment-added
        comment: (?i)^(Patch Set [0-9]+:)?\s*recheck\s*$
    success:
      labels: {Verified: 1}
    failure:
      labels: {Verified: -1}
  - name: gate
    manager: dependent
    description: Approved changes are tested together, in order, and merged.
    precedence: high
    trigger:
      - event: comment-added
        approval: {Workflow: 1}
    require: {Code-Review: 2, Workflow: 1}
    start:
      labels: {Verified: 0}
    success:
      labels: {Verified: 2}
      submit: true
    failure:
      labels: {Verified: -2}
    supersedes: [check]
    window: 20
    window-floor: 3
    window-increase-amount: 1
    window-decrease-factor: 2

jobs:
  - {name: project-merge, run: "true", attempts: 3, voting: true}
  - {name: project-test1, run: "true", attempts: 3, voting: true}
  - {name: project-test2, run: "true", attempts: 3, voting: true}
  - {name: project1-project2-integration, run: "true", attempts: 3, voting: true}

projects:
  - name: org/project
    pipelines:
      check: &jobs
        jobs:
          - project-merge
          - {name: project-test1, dependencies: [project-merge]}
          - {name: project-test2, dependencies: [project-merge]}
      gate: *jobs
  - name: org/project1
    queue: integrated
    pipelines:
      check: &integrated
        jobs:
          - project-merge
          - {name: project-test1, dependencies: [project-merge]}
          - {name: project-test2, dependencies: [project-merge]}
          - {name: project1-project2-integration, dependencies: [project-merge]}
      gate: *integrated
  - name: org/project2
    queue: integrated
    pipelines:
      check: *integrated
      gate: *integrated
"""


def default_layout() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_LAYOUT_YAML)


def _connections(layout: dict[str, Any]) -> list[str]:
    names = [SIM_CONNECTION]
    for project in layout.get("projects") or []:
        if isinstance(project, dict) and isinstance(project.get("connection"), str):
            if project["connection"] not in names:
                names.append(project["connection"])
    return names


def _labels(layout: dict[str, Any]) -> list[str]:
    labels = ["local"]
    for job in layout.get("jobs") or []:
        nodeset = job.get("nodeset") if isinstance(job, dict) else None
        for label in [nodeset] if isinstance(nodeset, str) else nodeset or []:
            if isinstance(label, str) and label not in labels:
                labels.append(label)
    return labels


def _filled(layout: dict[str, Any]) -> dict[str, Any]:
    """The layout with the keys a simulation does not need filled in."""
    layout = copy.deepcopy(layout)
    for project in layout.get("projects") or []:
        if isinstance(project, dict):
            project.setdefault("connection", SIM_CONNECTION)
    for job in layout.get("jobs") or []:
        if isinstance(job, dict):
            job.setdefault("run", "true")
    return layout


def simulation_config(
    layout: dict[str, Any],
    *,
    state_dir: Path,
    task_queue_prefix: str = "sim",
    workflow_id_prefix: str = "",
    address: str = "127.0.0.1:7233",
) -> LockmasterConfig:
    """The deployment a simulation runs: the layout, one simulated Gerrit per connection named,
    a node label for every label named. Raises pydantic's ValidationError for a bad layout,
    located as in the layout (pipelines/projects/jobs)."""
    filled = _filled(layout)
    data = {
        "state-dir": str(state_dir),
        "temporal": {
            "address": address,
            "task-queue-prefix": task_queue_prefix,
            "workflow-id-prefix": workflow_id_prefix,
        },
        "connections": {
            name: {"driver": "local", "path": str(state_dir / "review" / name)}
            for name in _connections(filled)
        },
        "logs": {"url": SIM_LOGS_URL},
        "nodes": {
            "labels": [{"name": label} for label in _labels(filled)],
            "providers": [{
                "name": "simulated", "driver": "local",
                "pools": [{"name": "main", "labels": _labels(filled), "max-servers": 1000}],
            }],
        },
        "pipelines": filled.get("pipelines") or [],
        "queues": filled.get("queues") or [],
        "jobs": filled.get("jobs") or [],
        "projects": filled.get("projects") or [],
    }
    return LockmasterConfig.model_validate(data)

