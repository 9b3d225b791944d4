"""`lockmaster gate enqueue|dequeue|promote`: which pipelines they take, a change that cannot
enter is refused before anything is sent, a command that changed nothing exits non-zero, and
what a command did is printed (Temporal is replaced at the operator functions' boundary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from lockmaster.cli import gate_cmd
from lockmaster.model.change import ChangeRef
from lockmaster.review.local import LocalReviewStore
from lockmaster.starters import operator
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


# --- enqueue: what `change approve` refuses, `gate enqueue` refuses; nothing is signalled ----


@pytest.fixture
def store(calls: list[tuple[str, tuple[Any, ...]]], tmp_path: Path) -> LocalReviewStore:
    """The local review system of the embedded configuration, with demo/hello."""
    store = LocalReviewStore(tmp_path / "state" / "review" / "local", "local")
    store.create_project("demo/hello", {"README": "hello\n"})
    return store


def closed(store: LocalReviewStore, how: str) -> int:
    info = store.upload("demo/hello", files={"a": "a\n"}, subject="a")
    if how == "merged":
        store.submit(info.ref())
    elif how == "abandoned":
        store.abandon(info.number, author="dev")
    elif how == "wip":
        store.set_wip(info.number, True, author="dev")
    return info.number


@pytest.mark.parametrize(("how", "pipeline", "said"), [
    ("merged", "gate", "is merged: only an open change can enter gate"),
    ("abandoned", "gate", "is abandoned: only an open change can enter gate"),
    ("merged", "check", "is merged: only an open change can enter check"),
    ("wip", "gate", "is a work in progress: it cannot enter gate (mark it ready: lockmaster "
                    "change ready"),
])
def test_enqueue_of_a_change_that_cannot_enter_is_refused_before_anything_is_sent(
        store: LocalReviewStore, calls: list[tuple[str, tuple[Any, ...]]],
        monkeypatch: pytest.MonkeyPatch, how: str, pipeline: str, said: str) -> None:
    sent: list[str] = []

    async def signal(*args: Any, **kwargs: Any) -> None:
        sent.append("something")

    monkeypatch.setattr(operator, "enqueue_change", signal)
    monkeypatch.setattr(operator, "start_check", signal)
    number = closed(store, how)
    result = run("enqueue", "--change", str(number), "--pipeline", pipeline)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"error: change {number} (demo/hello) {said}" in text
    assert text.endswith("nothing was enqueued")
    assert len(result.output.strip().splitlines()) == 1
    assert sent == []


def test_enqueue_of_an_unknown_change_names_it_and_where_it_was_looked_for(
        store: LocalReviewStore) -> None:
    result = run("enqueue", "--change", "99")
    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()) == (
        "error: change 99 does not exist on connection 'local'; nothing was enqueued")


def test_an_open_change_is_enqueued_and_the_queue_named(
        store: LocalReviewStore, monkeypatch: pytest.MonkeyPatch) -> None:
    number = closed(store, "open")

    async def enqueue_change(client: object, cfg: object, pipeline: str, change: ChangeRef,
                             **kwargs: Any) -> RouteAction:
        return RouteAction("enqueued", f"{pipeline}/{change.project}", change.key)

    monkeypatch.setattr(operator, "enqueue_change", enqueue_change)
    result = run("enqueue", "--change", str(number))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"enqueued gate/demo/hello: {number},1"


# --- dequeue and promote: what they did, or why nothing ----------------------------------------


def test_promote_on_a_queue_that_is_not_configured_is_refused(
        calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    result = run("promote", "--queue", "demo/nope", "1")
    assert result.exit_code == 2, result.output
    assert ("queue 'demo/nope' is not configured (queues: demo/debian-package, demo/hello"
            in result.output)
    assert calls == []


def test_a_promote_or_dequeue_the_queue_rejected_fails_with_its_reason(
        calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    ANSWERS["promote"] = RouteAction(
        "ignored", "gate/demo/hello", "change 9 is not in the queue (queue: 7,1 8,1)")
    result = run("promote", "--queue", "demo/hello", "9")
    assert result.exit_code == 1, result.output
    assert " ".join(result.output.split()) == (
        "error: nothing done: ignored gate/demo/hello: change 9 is not in the queue "
        "(queue: 7,1 8,1)")
    ANSWERS["dequeue"] = RouteAction("unanswered", "gate/demo/hello", "the queue did not answer")
    result = run("dequeue", "--project", "demo/hello", "--change", "5")
    assert result.exit_code == 1, result.output
    assert "unanswered gate/demo/hello: the queue did not answer" in result.output


def test_what_a_promote_and_a_dequeue_did_is_printed(
        calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    ANSWERS["promote"] = RouteAction("promoted", "gate/demo/hello", "queue now: 8,1 7,1")
    result = run("promote", "--queue", "demo/hello", "8")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "promoted gate/demo/hello: queue now: 8,1 7,1"
    ANSWERS["dequeue"] = RouteAction("dequeued", "gate/demo/hello",
                                     "7,1 (with 9,1, which needs it); queue now: 8,1")
    result = run("dequeue", "--project", "demo/hello", "--change", "7")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "dequeued gate/demo/hello: 7,1 (with 9,1, which needs it); queue now: 8,1")


def test_enqueue_refusal_names_the_change_and_why(
        calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    from lockmaster.cli.context import load
    from lockmaster.model.change import ChangeInfo

    cfg = load(None)

    def change(project: str = "demo/hello", **flags: Any) -> ChangeInfo:
        return ChangeInfo(connection="local", project=project, branch="master", number=4,
                          patchset=2, status=flags.pop("status", "NEW"), commit="c" * 40,
                          **flags)

    assert operator.enqueue_refusal(cfg, "gate", change()) is None
    assert operator.enqueue_refusal(cfg, "check", change(private=True, wip=True)) is None
    assert operator.enqueue_refusal(cfg, "gate", change(private=True)) == (
        "change 4 (demo/hello) is private: it cannot enter gate (make it public: lockmaster "
        "change public 4)")
    assert operator.enqueue_refusal(cfg, "gate", change("org/other")) == (
        "change 4 (org/other): project org/other is not configured in lockmaster")
    cfg.project("demo/hello").pipelines.pop("gate")  # type: ignore[union-attr]
    assert operator.enqueue_refusal(cfg, "gate", change()) == (
        "change 4 (demo/hello): demo/hello has no jobs in gate (pipelines: check)")
