"""Gerrit hook command lines -> ReviewEvent, and clear errors for bad ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lockmaster.cli import main
from lockmaster.cli.hook_cmd import HOOK_NAMES
from lockmaster.starters.hook_args import (
    HOOK_OPTIONS,
    HookArgumentError,
    change_number,
    parse_hook,
)

SHA = "d5e1a1b0f00dfeedc0ffee5e1a1b0f00dfeedc0f"
CHANGE_ID = "I0123456789abcdef0123456789abcdef01234567"
URL = "https://review.example.org/c/org/app/+/4711"

CHANGE_ARGS = [
    "--change", f"org%2Fapp~main~{CHANGE_ID}",
    "--change-url", URL,
    "--change-owner", "Jane Dev (jane@example.org)",
    "--change-owner-username", "jane",
    "--project", "org/app",
    "--branch", "main",
    "--topic", "",
]  # fmt: skip


def test_patchset_created() -> None:
    argv = [
        *CHANGE_ARGS,
        "--kind", "REWORK",
        "--uploader", "Jane Dev (jane@example.org)",
        "--uploader-username", "jane",
        "--commit", SHA,
        "--patchset", "3",
    ]  # fmt: skip
    event = parse_hook("patchset-created", argv, "review")
    assert event.type == "patchset-created"
    assert event.connection == "review"
    assert (event.project, event.branch, event.change, event.patchset) == (
        "org/app",
        "main",
        4711,
        3,
    )
    assert (event.commit, event.change_id, event.url) == (SHA, CHANGE_ID, URL)
    assert event.author == "jane"


def test_comment_added_with_labels_and_equals_form() -> None:
    argv = [
        *CHANGE_ARGS,
        "--author", "Rick Reviewer (rick@example.org)",
        "--author-username=rick",
        "--commit", SHA,
        "--comment", "Patch Set 3: Code-Review+2\n\n--recheck please",
        "--Code-Review", "2",
        "--Code-Review-oldValue", "0",
        "--Verified=-1",
        "--Workflow", "+1",
    ]  # fmt: skip
    event = parse_hook("comment-added", argv, "review")
    assert event.type == "comment-added"
    assert event.approvals == {"Code-Review": 2, "Verified": -1, "Workflow": 1}
    assert event.comment == "Patch Set 3: Code-Review+2\n\n--recheck please"
    assert event.author == "rick"
    # Gerrit passes no patchset to comment-added: the router asks the review system.
    assert event.patchset is None
    assert event.change == 4711


def test_comment_value_may_look_like_an_option() -> None:
    argv = [*CHANGE_ARGS, "--commit", SHA, "--comment", "--project"]
    assert parse_hook("comment-added", argv, "r").comment == "--project"


def test_change_merged() -> None:
    newrev = "f" * 40
    argv = [
        *CHANGE_ARGS,
        "--submitter", "Rick Reviewer (rick@example.org)",
        "--commit", SHA,
        "--newrev", newrev,
    ]  # fmt: skip
    event = parse_hook("change-merged", argv, "review")
    assert (event.type, event.commit, event.newrev) == ("change-merged", SHA, newrev)
    # Without --submitter-username the display name is the author.
    assert event.author == "Rick Reviewer (rick@example.org)"


def test_change_abandoned() -> None:
    argv = [
        *CHANGE_ARGS,
        "--abandoner", "Jane Dev (jane@example.org)",
        "--abandoner-username", "jane",
        "--commit", SHA,
        "--reason", "superseded by 4712",
    ]  # fmt: skip
    event = parse_hook("change-abandoned", argv, "review")
    assert (event.type, event.change, event.comment) == (
        "change-abandoned",
        4711,
        "superseded by 4712",
    )


def test_ref_updated() -> None:
    argv = [
        "--oldrev", "0" * 40,
        "--newrev", SHA,
        "--refname", "refs/heads/stable/2.0",
        "--project", "org/app",
        "--submitter", "Jane Dev (jane@example.org)",
        "--submitter-username", "jane",
    ]  # fmt: skip
    event = parse_hook("ref-updated", argv, "review")
    assert event.type == "ref-updated"
    assert (event.project, event.branch, event.refname) == (
        "org/app",
        "stable/2.0",
        "refs/heads/stable/2.0",
    )
    assert (event.oldrev, event.newrev, event.change, event.author) == (
        "0" * 40,
        SHA,
        None,
        "jane",
    )


def test_bare_change_id_is_accepted() -> None:
    argv = [*CHANGE_ARGS, "--commit", SHA, "--patchset", "1"]
    argv[1] = CHANGE_ID
    assert parse_hook("patchset-created", argv, "r").change_id == CHANGE_ID


@pytest.mark.parametrize(
    ("url", "number"),
    [
        ("https://review.example.org/c/org/app/+/123", 123),
        ("https://review.example.org/c/org/app/+/123/4", 123),
        ("https://review.example.org/123", 123),
        ("https://review.example.org/123/", 123),
        ("https://review.example.org/#/c/123/", 123),
        ("https://review.example.org/gerrit/c/a/b/+/77", 77),
        ("https://review.example.org/c/org/app", None),
        ("https://review.example.org/", None),
    ],
)
def test_change_number_forms(url: str, number: int | None) -> None:
    assert change_number(url) == number


def _error(hook: str, argv: list[str]) -> str:
    with pytest.raises(HookArgumentError) as failed:
        parse_hook(hook, argv, "review")
    return str(failed.value)


def test_missing_project() -> None:
    argv = [a for a in CHANGE_ARGS if a not in ("--project", "org/app")]
    message = _error("patchset-created", [*argv, "--commit", SHA, "--patchset", "1"])
    assert "--project is required" in message
    assert "patchset-created accepts: --change <value> --change-url <value>" in message


@pytest.mark.parametrize("value", ["zero", "0", "-2", ""])
def test_bad_patchset(value: str) -> None:
    message = _error("patchset-created", [*CHANGE_ARGS, "--commit", SHA, "--patchset", value])
    assert "--patchset" in message
    assert "positive integer" in message or "required" in message


def test_missing_patchset() -> None:
    assert "--patchset is required" in _error("patchset-created", [*CHANGE_ARGS, "--commit", SHA])


def test_unknown_option() -> None:
    message = _error("patchset-created", [*CHANGE_ARGS, "--commit", SHA, "--colour", "blue"])
    assert "unknown option --colour" in message
    assert "--uploader-username" in message  # lists what is accepted


def test_unknown_hook() -> None:
    message = _error("patchset-updated", CHANGE_ARGS)
    assert "unknown hook 'patchset-updated'" in message
    assert "patchset-created" in message and "ref-updated" in message


def test_change_url_without_number() -> None:
    argv = [*CHANGE_ARGS, "--commit", SHA, "--patchset", "1"]
    argv[3] = "https://review.example.org/c/org/app"
    message = _error("patchset-created", argv)
    assert "--change-url 'https://review.example.org/c/org/app' names no change number" in message


def test_label_with_non_integer_value() -> None:
    argv = [*CHANGE_ARGS, "--commit", SHA, "--comment", "hi", "--Code-Review", "plus-two"]
    message = _error("comment-added", argv)
    assert "--Code-Review 'plus-two'" in message
    assert "must be an integer" in message


def test_missing_value_at_end() -> None:
    assert "--patchset needs a value" in _error(
        "patchset-created", [*CHANGE_ARGS, "--commit", SHA, "--patchset"]
    )


def test_option_where_value_expected() -> None:
    message = _error("patchset-created", [*CHANGE_ARGS, "--commit", "--patchset", "1"])
    assert "--commit needs a value, got the option '--patchset'" in message


def test_positional_argument() -> None:
    assert "unexpected argument 'stray'" in _error("ref-updated", ["stray"])


def test_duplicate_option() -> None:
    message = _error("patchset-created", [*CHANGE_ARGS, "--project", "other", "--commit", SHA])
    assert "--project is given twice" in message


def test_ref_updated_requires_refname() -> None:
    message = _error("ref-updated", ["--project", "org/app", "--newrev", SHA])
    assert "--refname is required" in message


def test_change_restored() -> None:
    # The hooks plugin's ChangeRestored: change, change-url, change-owner(-username), project,
    # branch, topic, restorer(-username), commit, reason.
    argv = [
        *CHANGE_ARGS,
        "--restorer", '"Cora Core <cora@example.org>"',
        "--restorer-username", "cora",
        "--commit", SHA,
        "--reason", "still needed",
    ]  # fmt: skip
    event = parse_hook("change-restored", argv, "review")
    assert event.type == "change-restored"
    assert (event.project, event.branch, event.change, event.commit) == (
        "org/app",
        "main",
        4711,
        SHA,
    )
    assert (event.author, event.comment, event.change_id) == ("cora", "still needed", CHANGE_ID)
    # Like comment-added, the hook names no patchset (the router asks), and no event time.
    assert (event.patchset, event.created) == (None, None)


def test_change_restored_without_reason_or_username() -> None:
    # The plugin passes `--reason ""` when the restorer gave none.
    argv = [*CHANGE_ARGS, "--restorer", '"Cora Core"', "--commit", SHA, "--reason", ""]
    event = parse_hook("change-restored", argv, "review")
    assert (event.author, event.comment) == ('"Cora Core"', "")


def test_change_restored_takes_no_labels() -> None:
    argv = [*CHANGE_ARGS, "--commit", SHA, "--reason", "", "--Workflow", "1"]
    message = _error("change-restored", argv)
    assert "unknown option --Workflow" in message
    assert "change-restored accepts:" in message and "--restorer-username" in message


def test_change_restored_requires_commit() -> None:
    message = _error("change-restored", [*CHANGE_ARGS, "--restorer", "cora", "--reason", "x"])
    assert "--commit is required" in message


def test_every_parsed_hook_is_installable_by_name() -> None:
    assert HOOK_NAMES == tuple(HOOK_OPTIONS)
    assert "change-restored" in HOOK_NAMES


@pytest.mark.parametrize("symlinked", [True, False])
def test_change_restored_reaches_the_hook_command(
    symlinked: bool,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`hooks/change-restored -> lockmaster` and `lockmaster hook change-restored` both parse
    the arguments as that hook (a bad command line stops before anything is delivered)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCKMASTER_CONFIG", raising=False)
    monkeypatch.setenv("LOCKMASTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LOCKMASTER_CONNECTION", "gerrit")
    args = [*CHANGE_ARGS, "--reason", "x"]  # no --commit
    argv = (
        ["/srv/gerrit/hooks/change-restored", *args]
        if symlinked
        else ["/usr/bin/lockmaster", "hook", "change-restored", *args]
    )
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main.run()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "lockmaster hook change-restored: change-restored: --commit is required" in err
