"""Cloud onboarding's data (issue 17), shared by the workflow, its activities and the CLI: the
phases of `onboard/<cloud>/<region>` and how each stands, and the preflight request.

Only the first phase (preflight) is implemented; the others are listed so the Web UI, `lockmaster
cloud status` and the query show the whole road and say plainly what is not built yet.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from lockmaster.clouds.preflight import PreflightReport
from lockmaster.config.clouds import CloudConfig
from lockmaster.config.dns import DnsConfig

PhaseState = Literal["pending", "running", "passed", "failed", "not-implemented"]

# The phases, in order: (name, what it does).
PHASES: list[tuple[str, str]] = [
    ("preflight", "check the cloud before anything is created"),
    ("projects-users", "zuul and ci projects and users; clouds.yaml entries"),
    ("human-gates", "secrets entered, DNS approved, ramp approved"),
    ("resources", "keypairs, security groups, networks, declaratively"),
    ("images", "base images uploaded, retention"),
    ("mirror", "region mirror: volume, server, proxy, DNS, probe (a saga)"),
    ("activation", "pool at max-servers 0, canary, ramp"),
    ("dashboard", "the region's Grafana dashboard"),
    ("te-hosts", "TE hosts' MACs as Neutron ports"),
]
IMPLEMENTED = frozenset({"preflight"})


def onboard_id(cloud: str, region: str, prefix: str = "") -> str:
    return f"{prefix}onboard/{cloud}/{region}"


class PreflightRequest(BaseModel):
    cloud: CloudConfig  # public settings and references only (config/clouds.py)
    region: str


class OnboardInput(BaseModel):
    cloud: CloudConfig  # file references already absolute (CloudConfig.resolved)
    region: str
    # The DNS server for the region mirror's name (config/dns.py), api-key-file absolute; none:
    # preflight does not check DNS (the mirror phase will need it).
    dns: DnsConfig | None = None
    requested_by: str = ""


class Phase(BaseModel):
    name: str
    description: str
    state: PhaseState
    message: str = ""


class OnboardingStatus(BaseModel):
    cloud: str
    region: str
    phases: list[Phase]
    preflight: PreflightReport | None = None
    outcome: str = ""  # set when the workflow stops: why, and what to do next
    requested_by: str = ""

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)


def initial_status(request: OnboardInput) -> OnboardingStatus:
    phases = [
        Phase(name=name, description=text,
              state="pending" if name in IMPLEMENTED else "not-implemented")
        for name, text in PHASES
    ]
    return OnboardingStatus(cloud=request.cloud.name, region=request.region, phases=phases,
                            requested_by=request.requested_by)


def after_preflight(status: OnboardingStatus, report: PreflightReport | None,
                    error: str = "") -> None:
    """Record preflight's outcome; the workflow stops after it (later phases not built)."""
    status.preflight = report
    phase = status.phase("preflight")
    if report is None:
        phase.state, phase.message = "failed", f"preflight could not run: {error}"
    else:
        phase.state = "passed" if report.ok else "failed"
        phase.message = report.summary()
    if phase.state == "failed":
        status.outcome = ("stopped: preflight failed; fix what the report says, then run "
                          "`lockmaster cloud onboard` again (a new run checks again)")
    else:
        status.outcome = ("stopped after preflight: the later phases are not implemented yet "
                          "(issue 17); nothing was created in the cloud")


MARKS = {"pending": "·", "running": "▶", "passed": "✔", "failed": "✘",
         "not-implemented": "○"}


def details_markdown(status: OnboardingStatus) -> str:
    """The Web UI's current details: one line per phase, then the failed checks."""
    lines = [f"**onboard** cloud `{status.cloud}` region `{status.region}`"]
    if status.outcome:
        lines.append(status.outcome)
    lines.append("")
    for phase in status.phases:
        text = phase.message or phase.description
        state = "not implemented yet" if phase.state == "not-implemented" else phase.state
        lines.append(f"- {MARKS[phase.state]} **{phase.name}**: {state} — {text}")
    if status.preflight is not None and not status.preflight.ok:
        lines.append("")
        lines.append("Preflight failures:")
        for check in status.preflight.failed():
            lines.append(f"- `{check.name}`: {check.message} (fix: {check.fix})")
    return "\n".join(lines)
