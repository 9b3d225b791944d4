"""`lockmaster gate enqueue|dequeue|promote`: which pipelines they take, and a command that
changed nothing exits non-zero (Temporal is replaced at the operator functions' boundary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from lockmaster.cli import gate_cmd
from lockmaster.starters.router_types import RouteAction


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """The embedded configuration; the operator functions record their calls and answer
    what `answers` holds."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCKMASTER_CONFIG", raising=False)
    monkeypatch.setenv("LOCKMASTER_STATE_DIR", str(tmp_path / "state"))
    seen: list[tuple[str, tuple[Any, ...]]] = []

    async def connect(cfg: object) -> object:
        return object()

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def call(*args: Any) -> RouteAction:
            seen.append((name, args))
            return ANSWERS.get(name, RouteAction(name, "wf"))
        return call

    monkeypatch.setattr(gate_cmd, "connect", connect)
    for name in ("dequeue", "promote"):
        monkeypatch.setattr(gate_cmd.operator, name, recorder(name))
    ANSWERS.clear()
    return seen


ANSWERS: dict[str, RouteAction] = {}


def run(*args: str) -> Result:
    return CliRunner().invoke(gate_cmd.app, list(args))


def test_dequeue_from_check_is_passed_on(calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    ANSWERS["dequeue"] = RouteAction("dequeued", "check/demo/hello/1/1")
    result = run("dequeue", "--pipeline", "check", "--project", "demo/hello", "--change", "1")
    assert result.exit_code == 0, result.output
    assert "dequeued check/demo/hello/1/1" in result.output
    [(name, args)] = calls
    assert name == "dequeue" and args[2:] == ("check", "demo/hello", 1)


def test_a_command_that_changed_nothing_fails(calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    ANSWERS["dequeue"] = RouteAction("ignored", detail="change 1 has no running check run")
    result = run("dequeue", "--pipeline", "check", "--project", "demo/hello", "--change", "1")
    assert result.exit_code == 1
    assert "nothing done: ignored: change 1 has no running check run" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["dequeue", "--pipeline", "nope", "--project", "demo/hello", "--change", "1"],
     "pipeline 'nope' is not configured (pipelines: check, gate"),
    (["dequeue", "--project", "org/none", "--change", "1"], "project 'org/none' is not "
     "configured"),
    (["promote", "--pipeline", "check", "--queue", "demo/hello", "1"],
     "'check' is not a dependent pipeline"),
    (["promote", "--queue", "demo/hello", "1,x"], "'1,x' is not a change"),
])
def test_bad_input_is_refused_before_anything_is_sent(
        calls: list[tuple[str, tuple[Any, ...]]], args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert calls == []
