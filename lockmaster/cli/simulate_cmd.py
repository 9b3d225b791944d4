"""`lockmaster simulate SCENARIO.yaml`: play a scenario against the real workflows
(spec/scenarios.md). Exit status: 0 ran to the end, 2 invalid scenario, 1 internal error."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import typer

from lockmaster.cli.context import err, fail, out
from lockmaster.simulate.loading import ScenarioError, load_scenario
from lockmaster.simulate.report import summary
from lockmaster.simulate.runner import run_simulation

EXIT_INVALID = 2
EXIT_INTERNAL = 1


def simulate(
    scenario: Path = typer.Argument(..., help="the scenario file (YAML)"),
    json_path: Path | None = typer.Option(None, "--json", help="write the JSON report here"),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="multiply every duration and `at` time by this"
    ),
    address: str | None = typer.Option(
        None, "--address", help="an existing Temporal server HOST:PORT (default: start one)"
    ),
    codec_key_file: Path | None = typer.Option(
        None, "--codec-key-file", help="encrypt the simulation's payloads with these keys "
        "(codec.key-file of a deployment whose server it shares, docs/codec.md)"),
) -> None:
    """Play a scenario of review events and job outcomes against the real gate and check
    workflows, with a simulated Gerrit and executor, and report what the system did."""
    if time_scale <= 0:
        fail(f"--time-scale must be a number > 0 (got {time_scale:g})", EXIT_INVALID)
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        err.print(str(exc), markup=False)
        raise SystemExit(EXIT_INVALID) from None
    converter = None
    if codec_key_file is not None:
        from temporalio.contrib.pydantic import pydantic_data_converter

        from lockmaster.temporal.codec import EncryptionCodec, KeyFileError, load_keys, with_codec

        try:
            codec = EncryptionCodec(load_keys(codec_key_file))
        except KeyFileError as exc:
            fail(f"--codec-key-file: {exc}", EXIT_INVALID)
        converter = with_codec(pydantic_data_converter, codec)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        report = asyncio.run(run_simulation(loaded, address=address, time_scale=time_scale,
                                            data_converter=converter))
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERNAL)
    except Exception as exc:  # anything else is ours (or the server's): exit 1, say what
        logging.getLogger(__name__).debug("simulation failed", exc_info=True)
        fail(f"the simulation could not run to the end: {type(exc).__name__}: {exc}",
             EXIT_INTERNAL)
    out.print(summary(report), markup=False, highlight=False)
    if json_path is not None:
        _write(json_path, report)


def _write(path: Path, report: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        fail(f"cannot write the report to {path}: {exc.strerror}", EXIT_INTERNAL)
    out.print(f"\nreport written to {path}")
