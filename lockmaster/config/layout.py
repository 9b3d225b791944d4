"""The layout part of `lockmaster.yaml`: pipelines (their triggers, requirements, reporters and
window), shared queues, jobs and projects; and the checks that tie them together.

Zuul's names are kept where Zuul has the concept (window-floor, fail-fast, dequeue-on-new-patchset,
per-branch queues), so a Zuul user reads this layout without a dictionary.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from lockmaster.config.base import ConfigModel, ReferenceError_, check_unique

if TYPE_CHECKING:
    from lockmaster.config.models import LockmasterConfig


class Trigger(ConfigModel):
    event: Literal[
        "patchset-created", "comment-added", "change-merged", "change-abandoned", "ref-updated",
        "vote-deleted", "change-restored", "wip-state-changed", "private-state-changed",
    ]
    # comment-added: a regular expression the whole comment must match (re.search).
    comment: str | None = None
    # comment-added: labels the event must carry at least, e.g. {Workflow: 1}.
    approval: dict[str, int] = Field(default_factory=dict)
    # ref-updated: regular expression on the ref name.
    ref: str | None = None

    @field_validator("comment", "ref")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class ReportAction(ConfigModel):
    labels: dict[str, int] = Field(default_factory=dict)
    # Submit (merge) the change after reporting (dependent pipelines).
    submit: bool = False
    # The report's first line instead of the default ("Build succeeded (gate)." ...).
    message: str | None = None


IncreaseType = Literal["linear", "exponential"]
DecreaseType = Literal["exponential", "linear"]


class WindowSettings(ConfigModel):
    """Zuul's rate limiting of a dependent pipeline's queues: only the first `window` items run
    jobs; each merge grows the window (linear: +factor, exponential: *factor) up to the
    ceiling, each failure shrinks it (exponential: //factor, linear: -factor) down to the
    floor. A pipeline sets the defaults; a queue (`queues:`) may override any of them."""

    window: int | None = Field(None, ge=0)  # 0: no limit
    window_floor: int | None = Field(None, ge=1)
    window_ceiling: int | None = Field(None, ge=1)
    window_increase_type: IncreaseType | None = None
    window_increase_factor: int | None = Field(None, ge=0)
    window_decrease_type: DecreaseType | None = None
    window_decrease_factor: int | None = Field(None, ge=1)


class QueueConfig(WindowSettings):
    """A shared queue of a dependent pipeline (Zuul's `queue`): the projects naming it are gated
    together."""

    name: str
    # One queue per branch (`gate/<queue>@<branch>`) instead of one across branches.
    per_branch: bool = False


class PipelineConfig(ConfigModel):
    name: str
    manager: Literal["independent", "dependent"] = "independent"
    description: str = ""
    trigger: list[Trigger]
    # The change must have at least these current approvals to enter (e.g. {Code-Review: 2}).
    require: dict[str, int] = Field(default_factory=dict)
    start: ReportAction | None = None
    success: ReportAction = Field(default_factory=ReportAction)
    failure: ReportAction = Field(default_factory=ReportAction)
    # Order of precedence for node requests (gate before check before post); default: high for
    # dependent pipelines, normal otherwise.
    precedence: Literal["high", "normal", "low"] | None = None
    # Leave these pipelines when entering this one (a change entering the gate leaves check).
    supersedes: list[str] = Field(default_factory=list)
    # Reports when a change enters the pipeline and when it leaves without a result (an
    # operator's dequeue, a new patchset, abandoned): none unless configured.
    enqueue: ReportAction | None = None
    dequeue: ReportAction | None = None
    # A new patchset takes the change's old one out of the pipeline (Zuul's default).
    dequeue_on_new_patchset: bool = True
    # Test each change alone: no git parents or Depends-On changes merged ahead of it.
    ignore_dependencies: bool = False
    # Dependent pipelines: only the first `window` items of a queue run jobs (Zuul's defaults).
    window: int = Field(20, ge=0)
    window_floor: int = Field(3, ge=1)
    window_ceiling: int | None = Field(None, ge=1)
    window_increase_type: IncreaseType = "linear"
    window_increase_factor: int | None = Field(None, ge=0)
    window_increase_amount: int | None = Field(None, ge=0)  # the older name of the linear factor
    window_decrease_type: DecreaseType = "exponential"
    window_decrease_factor: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _one_increase_factor(self) -> PipelineConfig:
        if self.window_increase_factor is not None and self.window_increase_amount is not None:
            raise ValueError("give window-increase-factor or its older name "
                             "window-increase-amount, not both")
        return self

    @property
    def increase_factor(self) -> int:
        chosen = self.window_increase_factor
        if chosen is None:
            chosen = self.window_increase_amount
        return chosen if chosen is not None else 1

    @property
    def node_precedence(self) -> int:
        """Node requests: lower is served first (0 high, 1 normal, 2 low)."""
        chosen = self.precedence or ("high" if self.manager == "dependent" else "normal")
        return {"high": 0, "normal": 1, "low": 2}[chosen]


class PackageStep(ConfigModel):
    """A packaging job's step, run by lockmaster's package tool on the node (docs/packaging.md):
    build the packages, lint them, publish them to the change's test repository, or install-test
    that repository. Steps after `build` take the packages (or the test repository) from the
    artifacts of the jobs they depend on."""

    step: Literal["build", "lint", "test-repo", "install-test"]
    format: Literal["auto", "deb", "rpm"] = "auto"
    source: str = "."  # the package source in the project's checkout (debian/, *.spec)


class SecretVar(ConfigModel):
    """A job variable whose value is a secret (`vars: {TOKEN: {secret: pypi-token}}`): only the
    secret's name travels with the job; the executor reads the value when the job starts."""

    secret: str


class JobConfig(ConfigModel):
    name: str
    # Shell command, run in the project's checkout on the first node. Package jobs (`package`)
    # have theirs made by lockmaster; a `run` given with them runs after the step.
    run: str = ""
    package: PackageStep | None = None
    pre_run: list[str] = Field(default_factory=list)  # a failure here means RETRY (infrastructure)
    post_run: list[str] = Field(default_factory=list)  # always run; failures are logged only
    nodeset: list[str] | str = "local"  # label, or one label per node
    # Seconds for workspace preparation, pre-run and run; waiting for nodes and for a TE is not
    # part of it (Zuul's semantics), post-run and artifact collection have their own bounds.
    timeout: float = Field(1800.0, gt=0)
    # Waiting longer than this for nodes ends the build NODE_FAILURE (default: as long as it
    # takes, up to the executor's backstop of a week).
    node_wait_timeout: float | None = Field(None, gt=0)
    # The same for the job's TE (`testenv`); and whether the TE wait counts against `timeout`.
    te_wait_timeout: float | None = Field(None, gt=0)
    timeout_includes_te_wait: bool = False
    attempts: int = Field(3, ge=1)
    voting: bool = True
    required_projects: list[str] = Field(default_factory=list)
    # Environment variables of the job; a value may name a secret (`secrets:` at the top).
    vars: dict[str, str | SecretVar] = Field(default_factory=dict)
    description: str = ""
    # The job needs a test environment with this label: leased before it starts (the wait
    # counts against its timeout only with `timeout-includes-te-wait`), described in the file
    # named by $TE_DATAFILE.
    testenv: str | None = None
    # Dependent pipelines (Zuul v2's hold-following-changes): the items behind an item do not
    # start their builds until this job has succeeded on it. A short job that predicts the
    # long ones' failures then saves the builds a reset would throw away.
    hold_following_changes: bool = False
    # Zuul's provides/requires: in a dependent pipeline, a job requiring an artifact waits
    # until every job providing it in the items ahead has completed, and gets their artifacts
    # (e.g. a package build whose build dependency a change ahead builds: the build requires
    # and the test-repo job provides `package-repository`).
    provides: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something_to_run(self) -> JobConfig:
        if not self.run.strip() and self.package is None:
            raise ValueError(f"job {self.name!r} has nothing to run: give it `run` (a shell "
                             "command) or `package` (a packaging step)")
        return self

    @property
    def labels(self) -> list[str]:
        return [self.nodeset] if isinstance(self.nodeset, str) else list(self.nodeset)


class ProjectJob(ConfigModel):
    """A job in a project's pipeline: the job name and how it fits in this graph."""

    name: str
    dependencies: list[str] = Field(default_factory=list)
    voting: bool | None = None  # override the job's own setting
    # Stop this job as soon as one of these (running beside it) fails: e.g. a system test is
    # pointless once the install test of the same packages failed (seed 003).
    aborted_by: list[str] = Field(default_factory=list)


class ProjectPipeline(ConfigModel):
    jobs: list[ProjectJob | str] = Field(default_factory=list)
    # A failing voting job cancels the item's other builds at once (Zuul's fail-fast): the
    # buildset's result is known, and in a gate the items behind are reset without waiting.
    fail_fast: bool = False

    @field_validator("jobs")
    @classmethod
    def _normalise(cls, jobs: list[ProjectJob | str]) -> list[ProjectJob | str]:
        return [ProjectJob(name=j) if isinstance(j, str) else j for j in jobs]

    def project_jobs(self) -> list[ProjectJob]:
        return [j for j in self.jobs if isinstance(j, ProjectJob)]


class ProjectConfig(ConfigModel):
    name: str
    connection: str
    # Dependent pipelines: projects naming the same queue are gated together.
    queue: str | None = None
    pipelines: dict[str, ProjectPipeline] = Field(default_factory=dict)
    # Packages built from this project's merged commits go to the stable repository.
    publish: ProjectPublish | None = None


class ProjectPublish(ConfigModel):
    # The job that builds the packages (a `package: {step: build}` job): after a merge, the
    # gate's build of it is published when the gate tested the merged tree; otherwise it runs
    # again on the merged commit, and what it builds is published.
    build_job: str



def check_layout(config: LockmasterConfig) -> None:
    """Pipelines, queues and projects refer to each other correctly (raises ReferenceError_)."""
    check_unique(("pipelines",), [p.name for p in config.pipelines])
    check_unique(("jobs",), [j.name for j in config.jobs])
    check_unique(("projects",), [p.name for p in config.projects])
    check_unique(("queues",), [q.name for q in config.queues])
    pipelines = {p.name for p in config.pipelines}
    jobs = {j.name: j for j in config.jobs}
    for ji, job in enumerate(config.jobs):
        for var, value in job.vars.items():
            if isinstance(value, SecretVar) and value.secret not in config.secrets:
                raise ReferenceError_(
                    ("jobs", ji, "vars", var, "secret"),
                    f"job {job.name!r}: variable {var} names the secret {value.secret!r}, which "
                    f"is not defined; add it under `secrets:` (name: {{file: PATH}}) "
                    f"(defined: {', '.join(config.secrets) or 'none'})")
    for pi, project in enumerate(config.projects):
        if project.connection not in config.connections:
            raise ReferenceError_(
                ("projects", pi, "connection"),
                f"project {project.name!r}: connection {project.connection!r} is not defined "
                f"under connections (defined: {sorted(config.connections) or 'none'})",
            )
        for pname, ppipe in project.pipelines.items():
            where = ("projects", pi, "pipelines", pname)
            if pname not in pipelines:
                raise ReferenceError_(
                    where,
                    f"project {project.name!r}: pipeline {pname!r} is not defined under "
                    f"pipelines (defined: {sorted(pipelines) or 'none'})",
                )
            names = [j.name for j in ppipe.project_jobs()]
            check_unique((*where, "jobs"), names)
            for ji, pj in enumerate(ppipe.project_jobs()):
                if pj.name not in jobs:
                    raise ReferenceError_(
                        (*where, "jobs", ji),
                        f"project {project.name!r} pipeline {pname!r}: job {pj.name!r} "
                        "is not defined under jobs",
                    )
                for other in pj.aborted_by:
                    if other not in names or other == pj.name:
                        raise ReferenceError_(
                            (*where, "jobs", ji, "aborted-by"),
                            f"project {project.name!r} pipeline {pname!r}: job {pj.name!r} "
                            f"is aborted by {other!r}, which is not another job of this "
                            "pipeline",
                        )
                for dep in pj.dependencies:
                    if dep not in names:
                        raise ReferenceError_(
                            (*where, "jobs", ji, "dependencies"),
                            f"project {project.name!r} pipeline {pname!r}: job {pj.name!r} "
                            f"depends on {dep!r}, which is not in this pipeline's jobs",
                        )
            check_acyclic(where, project.name, pname, ppipe)
        if project.publish is not None:
            where = ("projects", pi, "publish")
            build = jobs.get(project.publish.build_job)
            if build is None or build.package is None or build.package.step != "build":
                builders = sorted(j.name for j in config.jobs
                                  if j.package and j.package.step == "build")
                raise ReferenceError_(
                    (*where, "build-job"),
                    f"project {project.name!r}: publish build-job "
                    f"{project.publish.build_job!r} must name a job with "
                    f"`package: {{step: build}}` (package build jobs: {builders or 'none'})",
                )
            if config.publishing.signing is None:
                raise ReferenceError_(
                    where,
                    f"project {project.name!r} publishes packages, but publishing.signing "
                    "is not set; give the GnuPG home and key id that sign the stable "
                    "repository",
                )


def check_acyclic(
    where: tuple[str | int, ...], project: str, pipeline: str, ppipe: ProjectPipeline
) -> None:
    deps = {j.name: list(j.dependencies) for j in ppipe.project_jobs()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ReferenceError_(
                (*where, "jobs"),
                f"project {project!r} pipeline {pipeline!r}: job dependencies form a cycle: "
                f"{cycle}",
            )
        state[name] = 1
        for dep in deps.get(name, []):
            visit(dep, [*path, name])
        state[name] = 2

    for name in deps:
        visit(name, [])
