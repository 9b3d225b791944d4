"""The local review system (lockmaster's Gerrit stand-in): submits merge only what was tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockmaster.review.base import SubmitRefused
from lockmaster.review.local import LocalReviewStore, _git


def test_submit_refuses_a_patchset_that_is_no_longer_current(tmp_path: Path) -> None:
    store = LocalReviewStore(tmp_path / "review")
    tip = store.create_project("org/app", {"README": "hello\n"})
    first = store.upload("org/app", files={"a.txt": "a\n"}, subject="Add a")
    tested = first.ref()
    store.new_patchset(first.number, {"a.txt": "untested\n"})
    with pytest.raises(SubmitRefused, match="patchset 1 of change 1 is not its current revision"):
        store.submit(tested)
    repo = store.repo("org/app")
    assert _git("rev-parse", "refs/heads/master", cwd=repo) == tip  # nothing merged
    assert store.info(first.number).status == "NEW"
    merged = store.submit(store.info(first.number).ref())
    assert _git("show", f"{merged}:a.txt", cwd=repo) == "untested"
    assert store.info(first.number).status == "MERGED"
