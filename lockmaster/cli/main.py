"""The `lockmaster` command. Installed as Gerrit hooks by symlink, it acts as that hook.

Commands are imported when they run, not before: Gerrit runs a hook per event, and importing
every command (Temporal's client, the OpenStack SDK, the workers) cost each event two seconds
of CPU. `lockmaster --help` lists them from the table below without importing any.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# Where each command lives: name -> (module, attribute, one-line help). An attribute that is a
# Typer app is a command group; a function is a single command.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("run_cmd", "run", "The main job: Temporal dev server, every worker, the demo."),
    "worker": ("run_cmd", "worker", "Run worker roles against a Temporal server."),
    "status": ("gate_cmd", "status", "Every pipeline: queues, items, windows, jobs."),
    "change": ("change_cmd", "app", "Play the reviewer on the local review system."),
    "gate": ("gate_cmd", "app", "Operate the pipelines: enqueue, dequeue, promote."),
    "rerun": ("rerun_cmd", "rerun", "Run one job of a check again."),
    "simulate": ("simulate_cmd", "simulate", "Play a scenario against the real workflows."),
    "nodes": ("nodes_cmd", "app", "The node pool: nodes, requests, holds, providers."),
    "te": ("te_cmd", "app", "Test environments: lease, renew, release, list, drain."),
    "publish": ("publish_cmd", "app", "Package publishing: show, queue, retrigger, skip."),
    "packaging": ("packaging_cmd", "app", "Packaging CI: the package cache and its hits."),
    "config": ("config_cmd", "app", "Check a configuration file, or apply it live."),
    "logs": ("logs_cmd", "app", "The log store: serve job logs, take executors' uploads."),
    "results": ("results_cmd", "app", "The results database: migrate, check, recent builds."),
    "gerrit": ("gerrit_cmd", "app", "Listen to a Gerrit's stream-events."),
    "events": ("events_cmd", "app", "Events kept for later (Temporal was down): list, flush."),
    "codec-server": ("codec_cmd", "codec_server",
                     "Decrypt payloads for the Web UI and the temporal CLI (token)."),
    "temporal": ("temporal_cmd", "app", "Set up a Temporal namespace for lockmaster."),
    "signatures": ("signatures_cmd", "app", "Known-failure signatures: check, test on history."),
    "web": ("web_cmd", "web", "The web service: status page and JSON API."),
    "dashboards": ("dashboards_cmd", "app", "Grafana dashboards: generate from the config."),
    "hook": ("hook_cmd", "hook", "Act as a Gerrit hook (by name, or as the hook symlink)."),
    "cloud": ("cloud_cmd", "app", "Onboard donated clouds: list, status, onboard."),
}
# `hook` takes Gerrit's own option names, whatever they are.
SETTINGS: dict[str, dict[str, Any]] = {
    "hook": {"allow_extra_args": True, "ignore_unknown_options": True},
}
# The hook names Gerrit's hooks plugin runs (hook_args.HOOK_OPTIONS), without importing it.
HOOK_NAMES = ("patchset-created", "comment-added", "change-merged", "change-abandoned",
              "change-restored", "ref-updated")


class LazyGroup(TyperGroup):
    """A group that imports a command when it runs; until then its name and help stand in."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(n for n in self.commands if n not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in COMMANDS:
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name][2])
        return None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in COMMANDS and args[0] not in self.commands:
            self.commands[args[0]] = load_command(args[0])
        return super().resolve_command(ctx, args)


def load_command(name: str) -> Any:
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"lockmaster.cli.{module}"), attribute)
    if isinstance(target, typer.Typer):
        target._add_completion = False  # only the top level could offer it (it does not)
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command(name, context_settings=SETTINGS.get(name))(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


app = typer.Typer(
    cls=LazyGroup,
    help="lockmaster: project gating, node pools and package publishing as Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"lockmaster {version('lockmaster')}")
        raise typer.Exit()


@app.callback()
def _main(
    _: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                           help="Print lockmaster's version and exit."),
) -> None:
    pass


def quiet_warnings() -> None:
    """asyncssh imports DSA names that the installed cryptography deprecates: ten lines of
    warnings before any output, on every command. Not ours to fix; not the user's to read."""
    warnings.filterwarnings("ignore", module="asyncssh")


def run() -> None:
    # Gerrit runs hooks by file name: `hooks/patchset-created -> lockmaster` means that hook.
    invoked = Path(sys.argv[0]).name
    if invoked in HOOK_NAMES:
        sys.argv = [sys.argv[0], "hook", invoked, *sys.argv[1:]]
    if sys.argv[1:2] == ["te-shell"]:
        # sshd's forced command on TE hosts: plain argv, no typer (fast start, exact exits).
        from lockmaster.testenv import shell

        shell.run(sys.argv[2:])
    quiet_warnings()
    app(prog_name="lockmaster")


if __name__ == "__main__":
    run()
