"""The `lockmaster` command. Installed as Gerrit hooks by symlink, it acts as that hook."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lockmaster.cli import (
    change_cmd,
    config_cmd,
    gate_cmd,
    gerrit_cmd,
    hook_cmd,
    nodes_cmd,
    publish_cmd,
    rerun_cmd,
    run_cmd,
    simulate_cmd,
    te_cmd,
    temporal_cmd,
)

app = typer.Typer(
    help="lockmaster: project gating, node pools and package publishing as Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(temporal_cmd.app, name="temporal")
app.add_typer(gerrit_cmd.app, name="gerrit")
app.add_typer(change_cmd.app, name="change")
app.add_typer(gate_cmd.app, name="gate")
app.add_typer(nodes_cmd.app, name="nodes")
app.add_typer(te_cmd.app, name="te")
app.add_typer(publish_cmd.app, name="publish")
app.command("status")(gate_cmd.status)
app.command("simulate")(simulate_cmd.simulate)
app.command("rerun")(rerun_cmd.rerun)
app.command("hook", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    hook_cmd.hook
)
app.command("run")(run_cmd.run)
app.command("worker")(run_cmd.worker)


def run() -> None:
    # Gerrit runs hooks by file name: `hooks/patchset-created -> lockmaster` means that hook.
    invoked = Path(sys.argv[0]).name
    if invoked in hook_cmd.HOOK_NAMES:
        sys.argv = [sys.argv[0], "hook", invoked, *sys.argv[1:]]
    if sys.argv[1:2] == ["te-shell"]:
        # sshd's forced command on TE hosts: plain argv, no typer (fast start, exact exits).
        from lockmaster.testenv import shell

        shell.run(sys.argv[2:])
    app()


if __name__ == "__main__":
    run()
