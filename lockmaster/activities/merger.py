"""Activities that prepare speculative states with real git (Zuul's merger)."""

from __future__ import annotations

from temporalio import activity

from lockmaster.git.cache import RepoCache
from lockmaster.git.dependencies import resolve_dependencies
from lockmaster.git.dependents import find_dependents
from lockmaster.git.merger import prepare_state, prepare_states
from lockmaster.model.state import (
    DependencyRequest,
    DependencyResult,
    DependentsRequest,
    DependentsResult,
    PrepareStateRequest,
    PrepareStateResult,
    PrepareStatesRequest,
    PrepareStatesResult,
)
from lockmaster.review.base import ReviewDriver


class MergerActivities:
    def __init__(
        self,
        cache: RepoCache,
        drivers: dict[str, ReviewDriver],
        project_connections: dict[str, str],
    ) -> None:
        self.cache = cache
        self.drivers = drivers
        self.project_connections = project_connections

    @activity.defn(name="resolve_dependencies")
    async def resolve_dependencies(self, request: DependencyRequest) -> DependencyResult:
        return await resolve_dependencies(
            request.change, self.drivers, self.cache, set(self.project_connections)
        )

    @activity.defn(name="find_dependents")
    async def find_dependents(self, request: DependentsRequest) -> DependentsResult:
        return await find_dependents(request, self.drivers, self.cache,
                                     set(self.project_connections))

    @activity.defn(name="prepare_state")
    async def prepare_state(self, request: PrepareStateRequest) -> PrepareStateResult:
        return await prepare_state(request, self.cache, self.project_connections)

    @activity.defn(name="prepare_states")
    async def prepare_states(self, request: PrepareStatesRequest) -> PrepareStatesResult:
        """A row of states in one go (the gate, after a reset): each on the one before."""
        return await prepare_states(request, self.cache, self.project_connections)
