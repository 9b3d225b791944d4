"""Payloads that name the same changes and jobs many times, written with each one once.

A merge row of a deep gate queue names every change ahead of each of its items (a row of 8 at
depth 140, 20 projects: 155 KB of JSON), a build names every change of its speculative state
twice (its order, and each project's merged list), an enqueue carries the same two job specs for
each of 20 projects. The soak (docs/benchmarks.md) ended with Temporal terminating the gate
queue: one workflow task re-issued the merges in flight of a 150-item queue, over gRPC's 4 MB
message limit ("GrpcMessageTooLarge").

`Interned` models write their JSON form with a table of the distinct changes (`refs`) and job
specs (`jobs`) and refer to them by index: a change as `{"$c": i}`, a list of changes as
`{"$cs": [i, ...]}`, a job spec as `{"$j": i}` (the changes' table is written as rows of
values under the field names). Reading expands it back, value for value; the
plain form (older workers, recorded histories) is read as before. A dict of the data that
looks like a marker is written as `{"$lit": ...}`.

(The gate queue's carried state has its own, further compaction: model/gate_compact.py.)
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Hashable
from typing import Any

from pydantic import (
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from lockmaster.model.base import Model
from lockmaster.model.change import ChangeRef

FORM = "interned-v1"
_REF_FIELDS = frozenset(ChangeRef.model_fields)
_MARKERS = frozenset({"$c", "$cs", "$j", "$lit"})
# Set while an Interned model is being written: the Interned models inside it stay plain.
_interning: contextvars.ContextVar[bool] = contextvars.ContextVar("interning", default=False)


def _is_ref(node: Any) -> bool:
    return isinstance(node, dict) and node.keys() == _REF_FIELDS


class Table:
    """Distinct JSON objects, each kept once and referred to by its index (also the gate's
    carried state's tables, model/gate_compact.py)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._ids: dict[Hashable, int] = {}

    def add(self, node: dict[str, Any], key: Hashable) -> int:
        if key not in self._ids:
            self._ids[key] = len(self.rows)
            self.rows.append(node)
        return self._ids[key]

    def add_job(self, node: dict[str, Any]) -> int:
        return self.add(node, json.dumps(node, sort_keys=True))


def intern(data: Any) -> dict[str, Any]:
    """A JSON-mode dump -> its interned form (the input is not changed)."""
    refs, jobs = Table(), Table()
    job_fields = job_spec_fields()

    def ref_id(node: dict[str, Any]) -> int:
        return refs.add(node, tuple(sorted(node.items())))

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if _is_ref(node):
                return {"$c": ref_id(node)}
            if node.keys() == job_fields:
                return {"$j": jobs.add_job(node)}
            out = {k: walk(v) for k, v in node.items()}
            if len(node) == 1 and next(iter(node)) in _MARKERS:
                return {"$lit": out}
            return out
        if isinstance(node, list):
            if node and all(_is_ref(v) for v in node):
                return {"$cs": [ref_id(v) for v in node]}
            return [walk(v) for v in node]
        return node

    body = walk(data)
    # The table as rows of values (field names once): a third of each change's JSON.
    fields = sorted(_REF_FIELDS)
    return {"form": FORM, "ref_fields": fields,
            "refs": [[ref[f] for f in fields] for ref in refs.rows], "jobs": jobs.rows,
            "body": body}


def job_spec_fields() -> frozenset[str]:
    from lockmaster.model.build import JobSpec  # build.py's models are Interned themselves

    return frozenset(JobSpec.model_fields)


def is_interned(data: Any) -> bool:
    return isinstance(data, dict) and data.get("form") == FORM and "body" in data


def unintern(data: dict[str, Any]) -> Any:
    """The interned form -> the plain JSON-mode data (new objects throughout)."""
    fields: list[str] = data["ref_fields"]
    refs = [dict(zip(fields, row, strict=True)) for row in data["refs"]]
    jobs: list[dict[str, Any]] = data["jobs"]

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1:
                (key, value), = node.items()
                if key == "$c" and isinstance(value, int):
                    return dict(refs[value])
                if key == "$cs" and isinstance(value, list):
                    return [dict(refs[i]) for i in value]
                if key == "$j" and isinstance(value, int):
                    return json.loads(json.dumps(jobs[value]))
                if key == "$lit" and isinstance(value, dict):
                    return {k: walk(v) for k, v in value.items()}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(data["body"])


class Interned(Model):
    """A model whose JSON form (activity arguments and results, signals) is interned."""

    @model_serializer(mode="wrap")
    def _write_interned(self, handler: SerializerFunctionWrapHandler,
                        info: SerializationInfo) -> Any:
        if not info.mode_is_json() or _interning.get():
            return handler(self)  # plain; or inside an Interned model, which interns it all
        token = _interning.set(True)
        try:
            data = handler(self)
        finally:
            _interning.reset(token)
        return intern(data)

    @model_validator(mode="before")
    @classmethod
    def _read_interned(cls, data: Any) -> Any:
        return unintern(data) if is_interned(data) else data
