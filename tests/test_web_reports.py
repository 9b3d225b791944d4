"""Reports link to the change's status-page entry (issue 16): the start and enqueue reports
of check and gate, in Zuul's shape (the first line unchanged)."""

from __future__ import annotations

from pathlib import Path

from lockmaster.pipelines import reports
from lockmaster.pipelines.freeze import report_labels
from tests.deployment import make_config


def test_the_link_follows_the_first_line() -> None:
    link = reports.status_link("https://ci.example.org/", 42)
    assert link == "https://ci.example.org/change/42"
    assert reports.start_report("gate", None, link) == (
        "Starting gate jobs.\n\nhttps://ci.example.org/change/42")
    assert reports.enqueue_report("check", None, link).splitlines()[0] == (
        "Added to the check queue.")
    # Without a status URL (older inputs, no web service): as before.
    assert reports.start_report("gate", None, reports.status_link(None, 42)) == (
        "Starting gate jobs.")


def test_a_pipeline_message_places_the_link_with_zuuls_placeholder() -> None:
    link = reports.status_link("http://127.0.0.1:9000", 7)
    assert reports.start_report("check", "Testing {status_url} now.", link) == (
        "Testing http://127.0.0.1:9000/change/7 now.")
    assert reports.start_report("check", "Starting ({status_url})", None) == "Starting ()"


def test_pipelines_carry_web_url(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, projects=[], jobs=[],
        pipelines=[{"name": "check", "trigger": [{"event": "patchset-created"}]}])
    config.web.url = "https://ci.example.org"
    labels = report_labels(config.pipelines[0], config.web.url)
    assert labels.status_url == "https://ci.example.org"
    assert report_labels(config.pipelines[0]).status_url is None


def test_a_running_queue_takes_the_status_url_with_its_settings() -> None:
    """`lockmaster config apply` sends every running queue its settings: from then on its start
    reports link to the status page (the queue and its continue-as-new input both hold it)."""
    from lockmaster.model.check import ReportLabels
    from tests.gate_harness import FAILURE, START, SUCCESS, deps, info, request
    from tests.test_gate_reconfigure import two_projects

    gate, running = two_projects()
    gate.ask(request(1), deps(info(1)))
    assert gate.told(1) == [("start", "Starting gate jobs.")]  # no URL yet: as before
    running.reconfigure(labels=ReportLabels(start=START, success=SUCCESS, failure=FAILURE,
                                            status_url="https://ci.example.org"))
    assert running.inp.labels.status_url == "https://ci.example.org"
    gate.ask(request(2), deps(info(2)))
    assert gate.told(2) == [("start", "Starting gate jobs.\n\nhttps://ci.example.org/change/2")]
