"""The gate queue's carried state, written compactly (GateInput's JSON form).

A queue of N items carries O(N^2) change references: each item's `changes` (every change ahead
of it plus its own), its speculative state's `changes` and per-project `merged` lists, each
build's `changes` key, the merges in flight. At 100 items of 20 projects that was about 5 MB of
JSON, past Temporal's 2 MB limit for a continue-as-new input: the queue wedged (docs/
benchmarks.md, "Soak"). Written out here, each distinct change and job appears once, in a table,
and is referred to by its index; an item's changes are written as how many of the item ahead's
it starts with, plus the rest; a list that equals what can be derived from the item's changes
(its state's changes, a project's merged changes, a build's key) is written as a marker. The
result grows linearly with the queue (tests/test_gate_compact.py holds it to a bound).

Exact: expanding gives back what was compacted, value for value; a list that would not come
back equal is written out. A dict of the data that looks like a marker is escaped. The plain
form (recorded histories, older starters) is read as before.
"""

from __future__ import annotations

import json
from typing import Any

from lockmaster.model.build import JobSpec
from lockmaster.model.change import ChangeRef
from lockmaster.model.interned import Table

FORM = "compact-v1"
_REF_FIELDS = tuple(ChangeRef.model_fields)
_JOB_FIELDS = frozenset(JobSpec.model_fields)
_MARKERS = ("$c", "$j", "$p", "$lit")
_SAME = "$item"  # this list equals the one derived from the item's changes


def compact(data: dict[str, Any]) -> dict[str, Any]:
    """GateInput's plain JSON-mode dict -> its compact form (the input is not changed)."""
    ref_table, job_table = Table(), Table()
    refs = ref_table.rows

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == len(_REF_FIELDS) and all(f in node for f in _REF_FIELDS):
                return {"$c": ref_table.add(node, tuple(node[f] for f in _REF_FIELDS))}
            if len(node) == len(_JOB_FIELDS) and node.keys() == _JOB_FIELDS:
                return {"$j": job_table.add_job(node)}
            out = {k: walk(v) for k, v in node.items()}
            if len(node) == 1 and next(iter(node)) in _MARKERS:
                return {"$lit": out}
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    body = walk(data)
    projects: list[dict[str, Any]] = []
    state = body.get("state")
    if isinstance(state, dict) and isinstance(state.get("items"), list):
        ahead: list[int] = []
        project_ids: dict[str, int] = {}
        for item in state["items"]:
            ahead = _compact_item(item, ahead, refs)
            _share_projects(item, projects, project_ids)
    return {"form": FORM, "refs": refs, "jobs": job_table.rows, "projects": projects,
            "body": body}


def is_compact(data: Any) -> bool:
    return isinstance(data, dict) and data.get("form") == FORM


def expand(data: dict[str, Any]) -> dict[str, Any]:
    """The compact form -> GateInput's plain dict (for validation)."""
    refs: list[dict[str, Any]] = data["refs"]
    jobs: list[dict[str, Any]] = data["jobs"]
    projects: list[dict[str, Any]] = data.get("projects", [])

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1:
                (key, value), = node.items()
                if key == "$c" and isinstance(value, int):
                    return refs[value]
                if key == "$j" and isinstance(value, int):
                    return jobs[value]
                if key == "$p" and isinstance(value, int):
                    return walk(projects[value])  # a copy: its markers are the item's
                if key == "$lit" and isinstance(value, dict):
                    return {k: walk(v) for k, v in value.items()}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    body = walk(data["body"])  # a new tree: the input is not changed
    state = body.get("state")
    if isinstance(state, dict) and isinstance(state.get("items"), list):
        ahead: list[int] = []
        for item in state["items"]:
            ahead = _expand_item(item, ahead, refs)
    return body


def _ids(value: Any) -> list[int] | None:
    """Indexes of a list of interned changes, or None if it is anything else."""
    if not isinstance(value, list):
        return None
    out = []
    for entry in value:
        if not (isinstance(entry, dict) and len(entry) == 1 and isinstance(entry.get("$c"), int)):
            return None
        out.append(entry["$c"])
    return out


def _key(refs: list[dict[str, Any]], ids: list[int]) -> str:
    return " ".join(f"{refs[i]['number']},{refs[i]['patchset']}" for i in ids)


def _merged(refs: list[dict[str, Any]], ids: list[int], project: dict[str, Any]) -> list[int]:
    return [i for i in ids if refs[i]["project"] == project.get("project")
            and refs[i]["branch"] == project.get("branch")]


def _compact_item(item: dict[str, Any], ahead: list[int], refs: list[dict[str, Any]]
                  ) -> list[int]:
    """Rewrite one item's derivable lists; returns its changes (the next item's `ahead`)."""
    ids = _ids(item.get("changes"))
    if ids is None:
        return []
    shared = 0
    while shared < min(len(ids), len(ahead)) and ids[shared] == ahead[shared]:
        shared += 1
    item["changes"] = {"$ahead": shared, "more": ids[shared:]}
    state = item.get("state")
    if isinstance(state, dict):
        if _ids(state.get("changes")) == ids:
            state["changes"] = _SAME
        for project in (state.get("projects") or {}).values():
            if isinstance(project, dict) and _ids(project.get("merged")) == _merged(
                    refs, ids, project):
                project["merged"] = _SAME
    key = _key(refs, ids)
    for build in item.get("builds") or []:
        if isinstance(build, dict) and build.get("changes") == key:
            build["changes"] = _SAME
    return ids


def _share_projects(item: dict[str, Any], table: list[dict[str, Any]],
                    ids: dict[str, int]) -> None:
    """An item's projects other than its own change's are usually those of the item ahead
    (same base, same merges, so the same head): each distinct one is written once. A `merged`
    marker in a shared entry still means the merged changes of the item that refers to it."""
    state = item.get("state")
    if not isinstance(state, dict) or not isinstance(state.get("projects"), dict):
        return
    for name, project in state["projects"].items():
        text = json.dumps(project, sort_keys=True)
        if text not in ids:
            ids[text] = len(table)
            table.append(project)
        state["projects"][name] = {"$p": ids[text]}


def _expand_item(item: dict[str, Any], ahead: list[int], refs: list[dict[str, Any]]
                 ) -> list[int]:
    """Undo _compact_item on an item whose interned entries are expanded already."""
    changes = item.get("changes")
    if not (isinstance(changes, dict) and "$ahead" in changes):
        return []  # written out (an item the compaction did not rewrite)
    ids = ahead[:changes["$ahead"]] + list(changes["more"])
    item["changes"] = [refs[i] for i in ids]
    state = item.get("state")
    if isinstance(state, dict):
        if state.get("changes") == _SAME:
            state["changes"] = [refs[i] for i in ids]
        for project in (state.get("projects") or {}).values():
            if isinstance(project, dict) and project.get("merged") == _SAME:
                project["merged"] = [refs[i] for i in _merged(refs, ids, project)]
    if any(isinstance(b, dict) and b.get("changes") == _SAME for b in item.get("builds") or []):
        key = _key(refs, ids)
        for build in item["builds"]:
            if isinstance(build, dict) and build.get("changes") == _SAME:
                build["changes"] = key
    return ids
