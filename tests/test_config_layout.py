"""The gate's part of the layout (lockmaster/config/layout.py, config/base.py): shared queues with
per-branch and window overrides, the pipeline's window, reporters and gate options, and what the
gate workflow starts with; invalid values are refused with the key path, line and reason."""

from __future__ import annotations

import pytest

from lockmaster.config.loader import EXAMPLES, ConfigError, parse_config
from lockmaster.config.models import LockmasterConfig
from lockmaster.pipelines.freeze import (
    freeze_jobs,
    freeze_pipeline,
    queue_job_graphs,
    report_labels,
)
from lockmaster.pipelines.queues import (
    base_queue,
    gate_input,
    per_branch,
    queue_name,
    queue_projects,
    split_queue,
)

DEV = (EXAMPLES / "dev.yaml").read_text()
GATE_FAILURE = "    failure:\n      labels: {Verified: -2}\n"
HELLO = "  - name: demo/hello\n    connection: local\n"
PACKAGED = "  - name: demo/lockmaster-hello\n    connection: local\n"
PROJECTS = ["demo/hello", "demo/lockmaster-hello"]


def layout(*, gate: str = "", queues: str = "", hello: str = "", packaged: str = "",
           jobs: str = "", check: str = "") -> str:
    """dev.yaml with lines added to the gate pipeline, a `queues:` section, lines added to the
    two projects, to the lint job and to the check pipeline (each already indented)."""
    text = DEV
    for anchor, extra in ((GATE_FAILURE, gate), (HELLO, hello), (PACKAGED, packaged)):
        assert text.count(anchor) == 1
        text = text.replace(anchor, anchor + extra)
    if queues:
        text = text.replace("\njobs:\n", f"\nqueues:\n{queues}\njobs:\n", 1)
    if jobs:
        text = text.replace("    run: sh ci/lint.sh\n", f"    run: sh ci/lint.sh\n{jobs}", 1)
    if check:
        text = text.replace("    manager: independent\n", f"    manager: independent\n{check}",
                            1)
    return text


def load(**parts: str) -> LockmasterConfig:
    return parse_config(layout(**parts), "lockmaster.yaml")


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "lockmaster.yaml")
    return [(p.path, p.line, p.message) for p in caught.value.problems]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_layout_helper_edits_what_it_says() -> None:
    text = layout(gate="    window: 7\n", queues="  - name: shared\n",
                  hello="    queue: shared\n", jobs="    hold-following-changes: true\n",
                  check="    ignore-dependencies: true\n")
    assert "labels: {Verified: -2}\n    window: 7\n\ntestenvs:" in text
    assert "\nqueues:\n  - name: shared\n\njobs:\n" in text
    assert HELLO + "    queue: shared\n" in text
    assert "run: sh ci/lint.sh\n    hold-following-changes: true\n" in text
    assert "manager: independent\n    ignore-dependencies: true\n" in text


# --- queues ----------------------------------------------------------------------------------


PER_BRANCH = """  - name: shared
    per-branch: true
    window: 5
    window-floor: 2
    window-ceiling: 8
    window-increase-type: exponential
    window-increase-factor: 2
    window-decrease-type: linear
    window-decrease-factor: 1
"""


def test_a_per_branch_queue_is_one_queue_per_branch_with_its_own_window() -> None:
    config = load(queues=PER_BRANCH, hello="    queue: shared\n",
                  packaged="    queue: shared\n")
    [queue] = config.queues
    assert (queue.name, queue.per_branch) == ("shared", True)
    assert per_branch(config, "shared") and base_queue(config, "demo/hello") == "shared"
    assert queue_name(config, "demo/hello", "stable") == "shared@stable"
    assert queue_name(config, "demo/lockmaster-hello", "master") == "shared@master"
    assert queue_name(config, "demo/hello") == "shared"
    assert split_queue("shared@stable") == ("shared", "stable")
    assert queue_projects(config, "shared@stable") == PROJECTS
    inp = gate_input(config, config.pipeline("gate"), "shared@stable")
    assert inp.branch == "stable" and inp.projects == PROJECTS
    state = inp.state
    assert (state.queue, state.pipeline) == ("shared@stable", "gate")
    assert (state.window, state.window_floor, state.window_ceiling) == (5, 2, 8)
    assert (state.window_increase_type, state.window_increase_amount) == ("exponential", 2)
    assert (state.window_decrease_type, state.window_decrease_factor) == ("linear", 1)
    assert inp.require == {"Code-Review": 2, "Workflow": 1} and inp.precedence == 0


def test_a_queue_spans_branches_by_default_and_a_project_without_one_is_alone() -> None:
    config = load(queues="  - name: shared\n    window: 4\n", hello="    queue: shared\n")
    assert config.queues[0].per_branch is False
    assert queue_name(config, "demo/hello", "stable") == "shared"
    assert queue_name(config, "demo/lockmaster-hello", "stable") == "demo/lockmaster-hello"
    assert queue_projects(config, "shared") == ["demo/hello"]
    assert split_queue("demo/lockmaster-hello") == ("demo/lockmaster-hello", None)
    shared = gate_input(config, config.pipeline("gate"), "shared")
    assert shared.branch is None and shared.state.window == 4
    assert shared.state.window_floor == 3  # the rest from the pipeline
    alone = gate_input(config, config.pipeline("gate"), "demo/lockmaster-hello")
    assert alone.state.window == 20 and alone.projects == ["demo/lockmaster-hello"]


def test_projects_naming_an_undeclared_queue_share_it_with_the_pipelines_window() -> None:
    config = load(hello="    queue: together\n", packaged="    queue: together\n")
    assert config.queues == []
    assert queue_projects(config, "together") == PROJECTS
    assert queue_name(config, "demo/hello", "stable") == "together"
    assert gate_input(config, config.pipeline("gate"), "together").state.window == 20


# --- the pipeline ---------------------------------------------------------------------------------


def test_the_pipelines_window_options() -> None:
    config = load(gate="    window: 10\n    window-floor: 4\n    window-ceiling: 40\n"
                       "    window-increase-type: exponential\n    window-increase-factor: 3\n"
                       "    window-decrease-type: linear\n    window-decrease-factor: 2\n")
    gate = config.pipeline("gate")
    assert (gate.window, gate.window_floor, gate.window_ceiling) == (10, 4, 40)
    assert (gate.window_increase_type, gate.increase_factor) == ("exponential", 3)
    state = gate_input(config, gate, "demo/hello").state
    assert (state.window, state.window_floor, state.window_ceiling) == (10, 4, 40)
    assert (state.window_increase_type, state.window_increase_amount) == ("exponential", 3)
    assert (state.window_decrease_type, state.window_decrease_factor) == ("linear", 2)


def test_the_window_defaults_are_zuuls() -> None:
    gate = load().pipeline("gate")
    assert (gate.window, gate.window_floor, gate.window_ceiling) == (20, 3, None)
    assert (gate.window_increase_type, gate.increase_factor) == ("linear", 1)
    assert (gate.window_decrease_type, gate.window_decrease_factor) == ("exponential", 2)
    assert load(gate="    window-increase-amount: 2\n").pipeline("gate").increase_factor == 2


def test_the_enqueue_and_dequeue_reporters() -> None:
    config = load(gate="    enqueue:\n      labels: {Verified: 0}\n      message: Queued.\n"
                       "    dequeue:\n      labels: {}\n")
    labels = report_labels(config.pipeline("gate"))
    assert labels.enqueue == {"Verified": 0} and labels.dequeue == {}
    assert labels.messages == {"enqueue": "Queued."}
    # The queue carries them with where the status page is (its reports link there).
    assert gate_input(config, config.pipeline("gate"), "demo/hello").labels == \
        labels.model_copy(update={"status_url": config.web.url})
    assert config.web.url == "http://127.0.0.1:9000"
    plain = report_labels(load().pipeline("gate"))
    assert plain.enqueue is None and plain.dequeue is None and plain.messages == {}
    assert (plain.start, plain.success, plain.failure) == (
        {"Verified": 0}, {"Verified": 2}, {"Verified": -2})


def test_dequeue_on_new_patchset_and_ignore_dependencies() -> None:
    default = load()
    assert default.pipeline("gate").dequeue_on_new_patchset is True
    assert gate_input(default, default.pipeline("gate"), "q").dequeue_on_new_patchset is True
    assert default.pipeline("check").ignore_dependencies is False
    config = load(gate="    dequeue-on-new-patchset: false\n",
                  check="    ignore-dependencies: true\n")
    assert gate_input(config, config.pipeline("gate"), "q").dequeue_on_new_patchset is False
    assert config.pipeline("check").ignore_dependencies is True


def test_hold_following_changes_is_frozen_into_the_job() -> None:
    config = load(jobs="    hold-following-changes: true\n")
    jobs = {j.name: j.hold_following_changes for j in freeze_jobs(config, "demo/hello", "gate")}
    assert jobs == {"lint": True, "unit": False}
    assert not any(j.hold_following_changes for j in freeze_jobs(load(), "demo/hello", "gate"))


def test_fail_fast_is_frozen_per_project_and_pipeline() -> None:
    text = layout().replace("      gate:\n        jobs:\n          - lint\n",
                            "      gate:\n        fail-fast: true\n        jobs:\n"
                            "          - lint\n", 1)
    config = parse_config(text)
    assert freeze_pipeline(config, "demo/hello", "gate").fail_fast is True
    assert freeze_pipeline(config, "demo/hello", "check").fail_fast is False
    graphs = queue_job_graphs(config, [*PROJECTS, "nope/nope"], "gate")
    assert {name: g.fail_fast for name, g in graphs.items()} == {
        "demo/hello": True, "demo/lockmaster-hello": False}
    assert [j.name for j in graphs["demo/hello"].jobs] == ["lint", "unit"]


# --- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(("parts", "needle", "path", "message"), [
    ({"gate": "    window: -1\n"}, "window: -1", "pipelines[1].window",
     "greater than or equal to 0"),
    ({"gate": "    window-floor: 0\n"}, "window-floor: 0", "pipelines[1].window-floor",
     "greater than or equal to 1"),
    ({"gate": "    window-increase-type: quadratic\n"}, "quadratic",
     "pipelines[1].window-increase-type", "'linear' or 'exponential'"),
    ({"gate": "    window-decrease-type: halving\n"}, "halving",
     "pipelines[1].window-decrease-type", "'exponential' or 'linear'"),
    ({"gate": "    window-decrease-factor: 0\n"}, "window-decrease-factor: 0",
     "pipelines[1].window-decrease-factor", "greater than or equal to 1"),
    ({"gate": "    dequeue-on-new-patchset: sometimes\n"}, "sometimes",
     "pipelines[1].dequeue-on-new-patchset", "valid boolean"),
    ({"gate": "    window-floors: 3\n"}, "window-floors", "pipelines[1].window-floors",
     "unknown key (check its spelling; keys are kebab-case)"),
    ({"gate": "    dequeue:\n      labels: {Verified: high}\n"}, "Verified: high",
     "pipelines[1].dequeue.labels.Verified", "valid integer"),
    ({"queues": "  - name: shared\n    per-branch: maybe\n"}, "per-branch: maybe",
     "queues[0].per-branch", "valid boolean"),
    ({"queues": "  - name: shared\n    window-ceiling: 0\n"}, "window-ceiling: 0",
     "queues[0].window-ceiling", "greater than or equal to 1"),
    ({"queues": "  - name: shared\n    window-increase-type: fast\n"}, "fast",
     "queues[0].window-increase-type", "'linear' or 'exponential'"),
    ({"queues": "  - name: shared\n    window-increase-amount: 2\n"}, "window-increase-amount",
     "queues[0].window-increase-amount", "unknown key"),
    ({"queues": "  - window: 3\n"}, "window: 3", "queues[0].name", "Field required"),
    ({"jobs": "    hold-following-changes: often\n"}, "often",
     "jobs[0].hold-following-changes", "valid boolean"),
    ({"check": "    ignore-dependencies: 2\n"}, "ignore-dependencies: 2",
     "pipelines[0].ignore-dependencies", "valid boolean"),
])
def test_invalid_values_are_refused_with_path_line_and_reason(
        parts: dict[str, str], needle: str, path: str, message: str) -> None:
    text = layout(**parts)
    [(where, line, said)] = problems(text)
    assert where == path
    assert line == line_of(text, needle)
    assert message in said


def test_both_names_of_the_increase_factor_are_refused() -> None:
    text = layout(gate="    window-increase-factor: 2\n    window-increase-amount: 2\n")
    [(where, _, said)] = problems(text)
    assert where == "pipelines[1]"
    assert said == ("give window-increase-factor or its older name window-increase-amount, "
                    "not both")


def test_a_queue_declared_twice_is_refused_at_the_second() -> None:
    text = layout(queues="  - name: shared\n  - name: other\n  - name: shared\n    window: 2\n")
    [(where, line, said)] = problems(text)
    assert where == "queues[2]"
    assert said == "queues: 'shared' is defined twice"
    assert line == line_of(text, "window: 2") - 1


def test_fail_fast_must_be_a_boolean() -> None:
    text = layout().replace("      gate:\n        jobs:\n          - lint\n",
                            "      gate:\n        fail-fast: soon\n        jobs:\n"
                            "          - lint\n", 1)
    [(where, line, said)] = problems(text)
    assert where == "projects[0].pipelines.gate.fail-fast"
    assert line == line_of(text, "fail-fast: soon") and "valid boolean" in said
