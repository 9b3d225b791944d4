"""The `lockmaster` command itself: every command in the table loads, help needs none of them,
no library warnings, and error messages are plain text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from lockmaster.cli import main
from lockmaster.cli.context import fail
from lockmaster.starters.hook_args import HOOK_OPTIONS

LOCKMASTER = str(Path(sys.executable).with_name("lockmaster"))


@pytest.mark.parametrize("name", list(main.COMMANDS))
def test_every_command_loads_under_its_name(name: str) -> None:
    command = main.load_command(name)
    assert command.name == name
    module, attribute, _ = main.COMMANDS[name]
    target = getattr(__import__(f"lockmaster.cli.{module}", fromlist=[attribute]), attribute)
    if isinstance(target, typer.Typer):  # a group keeps its subcommands (`config check`)
        assert set(command.commands) == {
            *(c.name or c.callback.__name__.replace("_", "-") for c in target.registered_commands),
            *(g.name for g in target.registered_groups)}


def test_hook_names_are_the_hooks_the_parser_knows() -> None:
    assert main.HOOK_NAMES == tuple(HOOK_OPTIONS)


def test_help_imports_no_command() -> None:
    code = ("import sys; from lockmaster.cli import main; sys.argv = ['lockmaster', '--help']\n"
            "try:\n    main.run()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('lockmaster.cli.', "
            "'temporalio', 'openstack', 'asyncssh'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip().splitlines()[-1] == "['lockmaster.cli.main']"
    for name, (_, _, short) in main.COMMANDS.items():
        assert name in proc.stdout and short[:30] in " ".join(proc.stdout.split())


def test_no_library_warnings_before_the_output() -> None:
    # `gerrit` imports asyncssh, whose DSA names the installed cryptography deprecates.
    proc = subprocess.run([LOCKMASTER, "gerrit", "listen", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and proc.stderr.strip() == ""
    assert "stream-events" in proc.stdout


def test_errors_are_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        fail("bad.yaml:100: jobs[0] [bold]x[/bold] :thumbs_up:")
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: bad.yaml:100: jobs[0] [bold]x[/bold] :thumbs_up:")


def test_config_check_gives_each_line_once(tmp_path: Path) -> None:
    lines = [f"# {n}" for n in range(99)] + ["connections: {local: {driver: local}}",
                                             "bogus: 1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([LOCKMASTER, "config", "check", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert f"{bad}:101: bogus: unknown key" in proc.stderr
    assert "💯" not in proc.stderr and "(line" not in proc.stderr


def test_piped_listings_are_not_cut_at_80_columns() -> None:
    from lockmaster.cli import context

    assert not sys.stdout.isatty() or pytest.skip("run with output captured")
    listing = context.listing_table("id", "url")
    node_id = "0123456789abcdef" * 4
    url = "http://127.0.0.1:8000/" + "x" * 120
    listing.add_row(node_id, url)
    with context.out.capture() as captured:
        context.out.print(listing)
    text = captured.get()
    assert node_id in text and url in text
