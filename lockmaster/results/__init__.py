"""The results database (issue 16): every build and buildset, written once, for the build
history pages, estimates, trends and statistics. docs/results.md describes the schema."""

from lockmaster.results.db import ResultsDB, ResultsDBError

__all__ = ["ResultsDB", "ResultsDBError"]
