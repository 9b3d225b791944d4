"""The chaos harness's invariant checks (bench/chaos_checks.py) catch what they are for: fed a
fabricated double merge, a duplicated report, two holders of one TE, a leaked node, a missing
package, a lost event or an unanswered log URL, each reports failure. No servers."""

from __future__ import annotations

from typing import Any

from bench import chaos_checks as checks

TAG = checks.TAG_PREFIX


def review(number: int, tag: str, message: str = "", patchset: int = 1) -> dict[str, Any]:
    return {"number": number, "patchset": patchset, "tag": f"{TAG}:{tag}", "message": message,
            "labels": {}}


def test_a_double_merge_and_a_merged_broken_change_fail() -> None:
    assert checks.merged_exactly_once([1, 2], [3], [1, 2]).ok
    double = checks.merged_exactly_once([1, 2], [3], [1, 2, 1])
    assert not double.ok and "good change 1 merged 2 times" in double.detail
    assert not checks.merged_exactly_once([1, 2], [3], [1]).ok  # 2 never merged
    broken = checks.merged_exactly_once([1], [3], [1, 3])
    assert not broken.ok and "broken change 3 merged" in broken.detail


def test_a_report_posted_twice_or_missing_fails() -> None:
    good = [review(1, "check:run-a:success"), review(1, "check:run-b:failure"),
            review(1, "gate:item-1:start"), review(1, "gate:item-1:success")]
    assert checks.one_report_per_outcome(good, {(1, 1): 2}, {1: 1}).ok
    twice = [*good, review(1, "gate:item-1:success")]
    result = checks.one_report_per_outcome(twice, {(1, 1): 2}, {1: 1})
    assert not result.ok and "posted 2 times" in result.detail
    other_run = [*good, review(1, "gate:item-2:failure")]  # a second outcome for one change
    assert not checks.one_report_per_outcome(other_run, {(1, 1): 2}, {1: 1}).ok
    assert not checks.one_report_per_outcome(good, {(1, 1): 3}, {1: 1}).ok  # a recheck lost


def test_two_holders_of_one_te_at_once_fail() -> None:
    lines = ["start h/te1 1 lease-a 10.0", "end h/te1 1 lease-a 13.0",
             "start h/te1 2 lease-b 14.0", "end h/te1 2 lease-b 17.0"]
    holds = checks.parse_holds(lines)
    assert checks.te_never_shared(holds, [("h/te1", 1, "k1"), ("h/te1", 2, "k2")]).ok
    overlapping = checks.parse_holds([lines[0], "start h/te1 2 lease-b 12.0", lines[1]])
    result = checks.te_never_shared(overlapping, [])
    assert not result.ok and "started while generation 1" in result.detail
    same_generation = checks.te_never_shared(holds, [("h/te1", 1, "k1"), ("h/te1", 1, "k2")])
    assert not same_generation.ok and "granted to" in same_generation.detail
    backwards = checks.te_never_shared([], [("h/te1", 2, "k1"), ("h/te1", 1, "k2")])
    assert not backwards.ok


def test_a_leaked_node_or_server_fails() -> None:
    ready = {"p": [{"id": "1", "state": "ready"}]}
    assert checks.nothing_leaked(ready).ok
    assert not checks.nothing_leaked({"p": [{"id": "1", "state": "in-use"}]}).ok
    assert not checks.nothing_leaked(ready, ["server-9"]).ok


def test_a_package_missing_from_a_mirror_fails() -> None:
    both = {"m1": {"1.0.1", "1.0.2"}, "m2": {"1.0.1", "1.0.2"}}
    assert checks.packages_on_mirrors({7: "1.0.1", 8: "1.0.2"}, both).ok
    result = checks.packages_on_mirrors({7: "1.0.1", 8: "1.0.2"},
                                        {**both, "m2": {"1.0.1"}})
    assert not result.ok and "mirror m2: version 1.0.2" in result.detail
    assert not checks.packages_on_mirrors({7: "1.0.1"}, {}).ok


def test_an_event_nobody_acted_on_fails() -> None:
    events = [{"kind": "upload", "change": 1, "patchset": 1, "emitted": True},
              {"kind": "approve", "change": 1, "patchset": 1, "emitted": False}]
    assert checks.no_event_lost(events, {"upload": {(1, 1)}, "approve": {(1, 1)}}).ok
    lost = checks.no_event_lost(events, {"upload": {(1, 1)}})
    assert not lost.ok and "approve of 1,1 (stream down: REST only)" in lost.detail


def test_an_unanswered_log_url_fails() -> None:
    message = ("Build succeeded (gate).\n\n- unit http://logs/1/unit/ : SUCCESS in 2s\n"
               "- devtest http://logs/1/devtest/ : SUCCESS in 4s\n")
    urls = checks.log_urls([review(1, "gate:i:success", message)])
    assert urls == ["http://logs/1/devtest/", "http://logs/1/unit/"]
    assert checks.log_urls_answer({u: 200 for u in urls}, True).ok
    result = checks.log_urls_answer({urls[0]: 200, urls[1]: 404}, True)
    assert not result.ok and "http://logs/1/unit/ answered 404" in result.detail
    assert not checks.log_urls_answer({}, None).ok  # nothing reported is not a pass
