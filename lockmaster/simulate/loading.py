"""Read and validate a scenario file: YAML with line numbers, the scenario models, the cross
references, and the layout validated as lockmaster.yaml's pipelines/projects/jobs.

Every problem names the file, the key path and the line; nothing runs unless there are none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lockmaster.config.loader import ConfigError, ConfigProblem, read_mapping
from lockmaster.config.models import LockmasterConfig
from lockmaster.simulate.layout import default_layout, simulation_config
from lockmaster.simulate.references import (
    check_changes,
    check_events,
    check_layout_references,
    check_outcomes,
)
from lockmaster.simulate.scenario import EVENT_TYPES, Scenario
from lockmaster.simulate.yamlpos import problem, problems_from_validation

KEYS = "name, layout, changes, events, outcomes, durations"


class ScenarioError(ConfigError):
    """A scenario that cannot be run; `str()` is the message for the user."""

    what = "scenario"


def _clean(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic's location, as keys of the file: without union tags and `[key]` markers."""
    parts = [p for p in loc if not (isinstance(p, str) and "[" in p)]
    if len(parts) > 2 and parts[0] in ("events", "outcomes") and isinstance(parts[1], int):
        del parts[2]  # the tag of the event kind / outcome kind
    return tuple(parts)


def _reword(err: dict[str, Any]) -> str | None:
    value = err.get("input")
    if err["type"] == "event_kind":
        kinds = ", ".join(EVENT_TYPES)
        if isinstance(value, dict):
            named = [k for k in value if k in EVENT_TYPES]
            if len(named) > 1:
                return f"one event per entry; this one is {' and '.join(named)}"
            first = next(iter(value), None)
            return f"unknown event kind {first!r} (kinds: {kinds})"
        if isinstance(value, str):
            return (f"unknown event {value!r}: `settle` stands alone, other events name a "
                    f"change (e.g. `- upload: A`); kinds: {kinds}")
        return f"an event is a mapping such as `upload: A`, or `settle` (kinds: {kinds})"
    if err["type"] == "outcome_kind":
        return ("an outcome is {job: JOB, change: X, result: RESULT} or "
                "{submit: X, result: refused}")
    if err["type"] == "literal_error":
        return f"{value!r} is not one of: {(err.get('ctx') or {}).get('expected')}"
    return None


def layout_data(scenario: Scenario) -> dict[str, Any]:
    """The layout the scenario runs: its own, else the default layout."""
    return scenario.layout.model_dump() if scenario.layout else default_layout()


def _layout_config(scenario: Scenario) -> LockmasterConfig:
    return simulation_config(layout_data(scenario), state_dir=Path("/nonexistent/simulation"))


def parse_scenario(text: str, file: Path | str = "<string>") -> Scenario:
    root, data = read_mapping(text, file, ScenarioError, f"a scenario is a mapping ({KEYS})")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(
            file, problems_from_validation(exc, root, clean=_clean, messages=_reword)
        ) from None
    found = check_changes(scenario) + check_events(scenario) + check_outcomes(scenario)
    if not found:
        try:
            config = _layout_config(scenario)
        except ValidationError as exc:
            raise ScenarioError(
                file, problems_from_validation(exc, root, prefix=("layout",))
            ) from None
        found = check_layout_references(scenario, config)
    if found:
        raise ScenarioError(file, [problem(root, loc, message) for loc, message in found])
    scenario._source = str(file) if file != "<string>" else None
    return scenario


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioError(path, [ConfigProblem("", None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ScenarioError(path, [ConfigProblem("", None, f"cannot read: {reason}")]) from None
    return parse_scenario(text, path)
