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
        async def call(*args: Any, **kwargs: Any) -> RouteAction:
            seen.append((name, args))
            KWARGS[name] = kwargs
            return ANSWERS.get(name, RouteAction(name, "wf"))
        return call

    monkeypatch.setattr(gate_cmd, "connect", connect)
    for name in ("dequeue", "promote"):
        monkeypatch.setattr(gate_cmd.operator, name, recorder(name))
    ANSWERS.clear()
    KWARGS.clear()
    return seen


ANSWERS: dict[str, RouteAction] = {}
KWARGS: dict[str, dict[str, Any]] = {}  # the keyword arguments of each operator call


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


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What reached the queue (the keyword arguments of each enqueue_change)."""
    sent: list[dict[str, Any]] = []

    async def enqueue_change(client: object, cfg: object, pipeline: str, change: ChangeRef,
                             **kwargs: Any) -> RouteAction:
        sent.append(kwargs)
        return RouteAction("enqueued", f"{pipeline}/{change.project}", change.key)

    async def start_check(*args: Any, **kwargs: Any) -> RouteAction:
        sent.append({"check": args})
        return RouteAction("started", "check/...")

    monkeypatch.setattr(operator, "enqueue_change", enqueue_change)
    monkeypatch.setattr(operator, "start_check", start_check)
    monkeypatch.setenv("LOCKMASTER_USER", "alice")
    return sent


def test_an_approved_change_is_enqueued_and_the_queue_named(
        store: LocalReviewStore, enqueued: list[dict[str, Any]]) -> None:
    number = closed(store, "open")
    store.vote(number, {"Code-Review": 2, "Workflow": 1}, author="core")
    result = run("enqueue", "--change", str(number))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"enqueued gate/demo/hello: {number},1 (enqueued by alice)"
    # Approved: it enters as any approved change does (and leaves when an approval goes).
    [sent] = enqueued
    assert (sent["ignore_requirements"], sent["by"], sent["reason"]) == (False, "alice", None)


def test_enqueue_of_a_change_without_its_approvals_is_refused_and_nothing_sent(
        store: LocalReviewStore, enqueued: list[dict[str, Any]]) -> None:
    """Issue 15: `gate enqueue` put any open change into the gate, whatever its approvals."""
    number = closed(store, "open")
    store.vote(number, {"Code-Review": 2}, author="core")
    result = run("enqueue", "--change", str(number))
    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()) == (
        f"error: change {number} (demo/hello) does not meet gate's requirements: Workflow 0 "
        f"(needs +1); to enqueue it without them, say why: lockmaster gate enqueue --change "
        f"{number} --pipeline gate --force --reason \"...\"; nothing was enqueued")
    assert enqueued == []


@pytest.mark.parametrize("reason", [None, "", "  "])
def test_force_without_a_reason_is_refused_and_nothing_sent(
        store: LocalReviewStore, enqueued: list[dict[str, Any]], reason: str | None) -> None:
    number = closed(store, "open")
    args = ["enqueue", "--change", str(number), "--force"]
    result = run(*args, *(["--reason", reason] if reason is not None else []))
    assert result.exit_code == 2, result.output
    assert "error: --force needs --reason: say why the change enters without its " \
           "approvals; nothing was enqueued" in " ".join(result.output.split())
    assert enqueued == []


def test_a_forced_enqueue_says_who_forced_it_and_why(
        store: LocalReviewStore, enqueued: list[dict[str, Any]]) -> None:
    number = closed(store, "open")
    result = run("enqueue", "--change", str(number), "--force", "--reason", "fixes the outage",
                 "--user", "bob")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"enqueued gate/demo/hello: {number},1 (enqueued by bob "
                                     "without its approvals: fixes the outage)")
    [sent] = enqueued
    assert (sent["ignore_requirements"], sent["by"], sent["reason"]) == (
        True, "bob", "fixes the outage")


def test_the_actor_is_the_user_option_then_the_environment_then_the_login(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from lockmaster.model.audit import actor

    monkeypatch.setattr(getpass, "getuser", lambda: "login")
    monkeypatch.delenv("LOCKMASTER_USER", raising=False)
    assert actor(None) == "login"
    monkeypatch.setenv("LOCKMASTER_USER", "from-env")
    assert actor(None) == "from-env" and actor("") == "from-env"
    assert actor("given") == "given"


def test_dequeue_and_promote_pass_who_and_why_on(
        calls: list[tuple[str, tuple[Any, ...]]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKMASTER_USER", "carol")
    assert run("dequeue", "--project", "demo/hello", "--change", "7",
               "--reason", "breaks the build").exit_code == 0
    assert KWARGS["dequeue"] == {"by": "carol", "reason": "breaks the build"}
    assert run("promote", "--queue", "demo/hello", "8", "--user", "dave").exit_code == 0
    assert KWARGS["promote"] == {"by": "dave", "reason": None}


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
