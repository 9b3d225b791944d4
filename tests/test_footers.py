"""Depends-On footer parsing."""

from __future__ import annotations

import pytest

from lockmaster.git.footers import DependsOn, depends_on, parse_depends_on

CID = "I" + "0123456789abcdef" * 2 + "01234567"


@pytest.mark.parametrize(
    ("raw", "number", "host"),
    [
        ("https://review.example.org/c/org/project/+/123", 123, "review.example.org"),
        ("https://review.example.org/c/org/project/+/123/", 123, "review.example.org"),
        ("https://review.example.org/c/org/project/+/123/2", 123, "review.example.org"),
        ("https://review.example.org/c/project/+/45", 45, "review.example.org"),
        ("https://Review.Example.org:8443/123", 123, "review.example.org:8443"),
        ("https://review.example.org/123/", 123, "review.example.org"),
        ("https://review.example.org/#/c/123/", 123, "review.example.org"),
        ("https://review.example.org/#/c/123/4", 123, "review.example.org"),
        ("https://review.example.org/c/123", 123, "review.example.org"),
        ("https://review.example.org/r/c/org/project/+/9", 9, "review.example.org"),
        # Zuul's TestGerritCRDAltBaseUrl: Gerrit under a path prefix, short form.
        ("https://review.example.com/prefixed_gerrit_ui/2", 2, "review.example.com"),
        ("https://review.example.com/prefixed_gerrit_ui/#/c/2/", 2, "review.example.com"),
        ("http://localhost:8080/c/org/p/+/7?tab=comments", 7, "localhost:8080"),
        ("local://local/5", 5, "local"),
        ("local://other/17", 17, "other"),
    ],
)
def test_change_urls(raw: str, number: int, host: str) -> None:
    assert parse_depends_on(raw) == DependsOn(number=number, host=host, raw=raw)


def test_change_id() -> None:
    assert parse_depends_on(CID) == DependsOn(change_id=CID, raw=CID)


@pytest.mark.parametrize(
    "raw",
    [
        "I0123",  # too short for a Change-Id
        CID + "0",  # too long
        "123",  # a bare number names no review system
        "https://review.example.org/c/org/project",
        "https://review.example.org/dashboard/self",
        "review.example.org/123",
        "see the other change",
    ],
)
def test_values_that_name_no_change(raw: str) -> None:
    assert parse_depends_on(raw) == DependsOn(raw=raw)


def test_footers_anywhere_on_their_own_line_any_case() -> None:
    message = (
        "Add the thing\n"
        "\n"
        "depends-on: https://review.example.org/1\n"
        "This does not Depends-On: https://review.example.org/99 mid-line.\n"
        "  Depends-On: https://review.example.org/98\n"
        "\n"
        "Depends-On: local://local/2   \r\n"
        "DEPENDS-ON:" + CID + "\n"
        "Depends-On:\n"
        "Change-Id: I" + "f" * 40 + "\n"
    )
    assert [(d.number, d.change_id, d.host) for d in depends_on(message)] == [
        (1, None, "review.example.org"),
        (2, None, "local"),
        (None, CID, None),
    ]


def test_each_dependency_once() -> None:
    message = (
        "x\n\n"
        "Depends-On: https://r.example.org/c/p/+/3\n"
        "Depends-On: https://r.example.org/c/p/+/3/2\n"
        "Depends-On: https://other.example.org/3\n"
        "Depends-On: junk\n"
        "Depends-On: junk\n"
    )
    assert [d.raw for d in depends_on(message)] == [
        "https://r.example.org/c/p/+/3", "https://other.example.org/3", "junk"]


def test_no_footers() -> None:
    assert depends_on("Subject\n\nBody mentions Depends-On in passing.\n") == []
