"""Configuration loading: every example is valid; every error names file, key path and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lockmaster.config.loader import EXAMPLES, ConfigError, load_config, parse_config

DEV = (EXAMPLES / "dev.yaml").read_text()


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    config = load_config(example)
    assert config.pipelines and config.projects and config.jobs


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "lockmaster.yaml")
    return [(p.path, p.line, p.message) for p in info.value.problems]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_unknown_key_is_reported_with_its_line() -> None:
    text = DEV.replace("    timeout: 300\n", "    timeout: 300\n    timout: 5\n")
    [(path, line, message)] = problems(text)
    assert path == "jobs[1].timout"
    assert line == line_of(text, "timout: 5")
    assert "unknown key" in message


def test_wrong_type_is_reported_with_its_line() -> None:
    text = DEV.replace("timeout: 300", "timeout: soon")
    [(path, line, message)] = problems(text)
    assert path == "jobs[1].timeout"
    assert line == line_of(text, "timeout: soon")
    assert "number" in message


def test_undefined_dependency_is_reported_at_the_dependency() -> None:
    text = DEV.replace("dependencies: [lint]\n          - name: docs",
                       "dependencies: [lnt]\n          - name: docs")
    [(path, line, message)] = problems(text)
    assert path == "projects[0].pipelines.check.jobs[1].dependencies"
    assert line == line_of(text, "dependencies: [lnt]")
    assert "'lnt'" in message and "not in this pipeline's jobs" in message


def test_unknown_label_and_connection_and_cycle() -> None:
    text = DEV.replace("nodeset: local\n    timeout: 300", "nodeset: gpu\n    timeout: 300")
    [(path, line, message)] = problems(text)
    assert path == "jobs[1].nodeset" and line == line_of(text, "nodeset: gpu")
    assert "'gpu'" in message
    text = DEV.replace("connection: local", "connection: gerrit")
    [(path, _, message)] = problems(text)
    assert path == "projects[0].connection" and "'gerrit' is not defined" in message
    text = DEV.replace("          - lint\n",
                       "          - name: lint\n            dependencies: [docs]\n")
    [(_, _, message)] = problems(text)
    assert "cycle" in message


def test_bad_yaml_and_bad_regex() -> None:
    [(_, line, message)] = problems("pipelines:\n  - name: [\n")
    assert line is not None and "not valid YAML" in message
    text = DEV.replace("comment: (?i)^", "comment: (?i)^((")
    [(path, _, message)] = problems(text)
    assert path == "pipelines[0].trigger[1].comment" and "regular expression" in message


def test_config_check_command_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "lockmaster.yaml"
    bad.write_text(DEV.replace("timeout: 300", "timeout: -1"))
    lockmaster = Path(sys.executable).parent / "lockmaster"
    result = subprocess.run([lockmaster, "config", "check", str(bad)], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert f"{bad}:{line_of(bad.read_text(), 'timeout: -1')}: jobs[1].timeout" in result.stderr
    good = subprocess.run([lockmaster, "config", "check", str(EXAMPLES / "dev.yaml")],
                          capture_output=True, text=True)
    assert good.returncode == 0 and "OK" in good.stdout
    missing = subprocess.run([lockmaster, "config", "check", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_min_ready_needs_a_cloud_pool_and_pool_names_are_unique() -> None:
    text = DEV.replace("    - name: local\n  providers:", "    - name: local\n      min-ready: 2\n"
                       "  providers:")
    [(path, line, message)] = problems(text)
    assert path == "nodes.labels[0].min-ready" and line == line_of(text, "min-ready: 2")
    assert "needs an openstack pool" in message
    text = DEV.replace("        - name: main\n          labels: [local]",
                       "        - name: main\n          labels: [local]\n"
                       "        - name: main\n          labels: [local]")
    [(path, _, message)] = problems(text)
    assert path.startswith("nodes.providers[0].pools") and "'main'" in message
