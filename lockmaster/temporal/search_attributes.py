"""lockmaster's custom search attributes: every workflow is findable by these in the Web UI.

e.g. `Project = "demo/hello" AND ChangeNumber = 3`, or
`Pipeline = "check" AND ExecutionStatus = "Running"`.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair

PROJECT = SearchAttributeKey.for_keyword("Project")
BRANCH = SearchAttributeKey.for_keyword("Branch")
# "Change" is a reserved word in the visibility query parser.
CHANGE = SearchAttributeKey.for_int("ChangeNumber")
PATCHSET = SearchAttributeKey.for_int("Patchset")
PIPELINE = SearchAttributeKey.for_keyword("Pipeline")
CONNECTION = SearchAttributeKey.for_keyword("Connection")
# The outcome once known (SUCCESS, FAILURE, MERGE_CONFLICT, ...): failed checks in one query.
RESULT = SearchAttributeKey.for_keyword("Result")
# Node pools: the provider a pool workflow serves.
PROVIDER = SearchAttributeKey.for_keyword("Provider")
# Check runs: the changes tested with this one (`<connection>:<number>`), so that a new
# patchset of one of them finds the runs to start again.
NEEDED_CHANGES = SearchAttributeKey.for_keyword_list("NeededChanges")

ALL: list[SearchAttributeKey] = [
    PROJECT, BRANCH, CHANGE, PATCHSET, PIPELINE, CONNECTION, RESULT, PROVIDER, NEEDED_CHANGES,
]


def dev_server_flags() -> list[str]:
    """`--search-attribute NAME=Type` flags registering them on `temporal server start-dev`."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int", "TEXT": "Text", "BOOL": "Bool",
             "KEYWORD_LIST": "KeywordList"}
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags


def pairs_for_change(
    *, connection: str, project: str, branch: str, change: int, patchset: int, pipeline: str
) -> list[SearchAttributePair]:
    return [
        SearchAttributePair(CONNECTION, connection),
        SearchAttributePair(PROJECT, project),
        SearchAttributePair(BRANCH, branch),
        SearchAttributePair(CHANGE, change),
        SearchAttributePair(PATCHSET, patchset),
        SearchAttributePair(PIPELINE, pipeline),
    ]
