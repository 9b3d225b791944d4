"""`onboard/<cloud>/<region>`: bringing a donated cloud region into service (issue 17, seed 004).

The phases are an ordered list, each with its state (model/onboarding.py), shown as the
workflow's current details and returned by the `status` query. Only preflight is implemented:
the workflow runs it, stores its report, and stops, saying whether preflight failed (fix the
cloud, start again) or passed (the later phases are not built yet). A worker crash mid-preflight
resumes by Temporal retrying the activity, which only reads the cloud.

No secrets pass through here: the input names password files / variables, which the activity
reads on its worker.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from lockmaster.clouds.preflight import PreflightReport, dns_checks
    from lockmaster.model.dns import CheckMirrorDnsRequest, MirrorDnsCheck
    from lockmaster.model.onboarding import (
        OnboardingStatus,
        OnboardInput,
        PreflightRequest,
        after_preflight,
        details_markdown,
        initial_status,
    )
    from lockmaster.temporal import search_attributes

# Preflight asks Keystone and each service a few questions; an unreachable API times out per
# request (HTTP_TIMEOUT in activities/onboarding.py), so a whole attempt stays within minutes.
PREFLIGHT_TIMEOUT = timedelta(minutes=10)
PREFLIGHT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3)


@workflow.defn(name="OnboardingWorkflow")
class OnboardingWorkflow:
    @workflow.init
    def __init__(self, request: OnboardInput) -> None:
        self._status = initial_status(request)

    @workflow.run
    async def run(self, request: OnboardInput) -> OnboardingStatus:
        status = self._status
        status.phase("preflight").state = "running"
        self._publish()
        try:
            report = await workflow.execute_activity(
                "onboarding_preflight",
                PreflightRequest(cloud=request.cloud, region=request.region),
                result_type=PreflightReport,
                start_to_close_timeout=PREFLIGHT_TIMEOUT,
                retry_policy=PREFLIGHT_RETRY,
                summary=f"preflight {request.cloud.name}/{request.region}",
            )
            if request.dns is not None and workflow.patched("onboarding-dns-preflight"):
                report = await self._dns_preflight(request, report)
            after_preflight(status, report)
        except ActivityError as exc:
            cause = exc.cause if exc.cause is not None else exc
            after_preflight(status, None, str(cause))
        result = "PREFLIGHT_PASSED" if status.phase("preflight").state == "passed" \
            else "PREFLIGHT_FAILED"
        workflow.upsert_search_attributes([search_attributes.RESULT.value_set(result)])
        self._publish()
        return status

    async def _dns_preflight(self, request: OnboardInput,
                             report: PreflightReport) -> PreflightReport:
        """The mirror's DNS name can be made (server answers, key accepted, zone exists)."""
        assert request.dns is not None
        try:
            dns = await workflow.execute_activity(
                "check_mirror_dns",
                CheckMirrorDnsRequest(dns=request.dns, cloud=request.cloud.name,
                                      region=request.region),
                result_type=MirrorDnsCheck,
                start_to_close_timeout=PREFLIGHT_TIMEOUT,
                retry_policy=PREFLIGHT_RETRY,
                summary=f"DNS preflight {request.cloud.name}/{request.region}",
            )
            extra = dns_checks(dns.name, dns.zone, dns.problems, dns.existing)
        except ActivityError as exc:  # the cloud's report stands; DNS is one failed check
            cause = exc.cause if exc.cause is not None else exc
            extra = dns_checks(None, request.dns.zone,
                               [f"DNS preflight could not run: {cause}"], {})
        return report.model_copy(update={"checks": [*report.checks, *extra]})

    @workflow.query(name="status")
    def status(self) -> OnboardingStatus:
        return self._status

    def _publish(self) -> None:
        workflow.set_current_details(details_markdown(self._status))
