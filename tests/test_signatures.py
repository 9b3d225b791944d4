"""Known-failure signatures: the file format's errors, the matcher (scope, files, the byte cap),
the executor's library (reload, bad files skipped), reading over HTTP, the history trial."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import httpx
import pytest

from lockmaster.config.loader import parse_config
from lockmaster.logserver import LogServer
from lockmaster.model.build import BuildResult, KnownFailure, Result
from lockmaster.signatures.config_check import check_signatures
from lockmaster.signatures.format import (
    FAILED_RESULTS,
    SignatureError,
    load_directory,
    load_signature,
    parse_signature,
)
from lockmaster.signatures.history import StoredBuild, try_signature
from lockmaster.signatures.library import SignatureLibrary
from lockmaster.signatures.match import DirectorySource, match_build, read_bounded
from lockmaster.signatures.sources import HttpSource, LogLocator, glob_regex
from tests.ports import free_port

REPO_SIGNATURES = Path(__file__).parent.parent / "signatures"
GOOD = "version: 1\nbug: https://bugs.example.test/1\nregex: 'disk full'\n"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


# --- the format ---------------------------------------------------------------------------


def test_a_good_signature_has_its_defaults_and_name() -> None:
    sig = parse_signature(GOOD, "/x/12345.yaml")
    assert sig.name == "12345"
    assert sig.files == ["job-output.txt"]
    assert sig.results == list(FAILED_RESULTS)
    assert sig.projects is None and sig.jobs is None
    assert sig.pattern.search("2026-01-01 | error: disk full\n")


def test_malformed_yaml_names_file_and_line() -> None:
    with pytest.raises(SignatureError) as caught:
        parse_signature("version: 1\nbug: [unclosed\nregex: x\n", "bad.yaml")
    text = str(caught.value)
    assert text.startswith("bad.yaml: invalid signature")
    assert "not valid YAML" in text
    assert "bad.yaml:3" in text or "bad.yaml:2" in text


def test_unknown_key_says_which_keys_exist() -> None:
    with pytest.raises(SignatureError) as caught:
        parse_signature(GOOD + "file: [x.txt]\n", "s.yaml")
    (problem,) = caught.value.problems
    assert problem.path == "file" and problem.line == 4
    assert "unknown key" in problem.message and "files" in problem.message


def test_bad_regex_is_refused_with_its_position_and_the_fix() -> None:
    with pytest.raises(SignatureError) as caught:
        parse_signature("version: 1\nbug: https://b/1\nregex: 'Timed out (waiting'\n", "r.yaml")
    (problem,) = caught.value.problems
    assert problem.path == "regex" and problem.line == 3
    assert "does not compile" in problem.message and "position" in problem.message
    assert "escape" in problem.message


@pytest.mark.parametrize("regex", ["''", "'.*'", "'x*'"])
def test_a_regex_that_matches_everything_is_refused(regex: str) -> None:
    with pytest.raises(SignatureError, match="every build"):
        parse_signature(f"version: 1\nbug: https://b/1\nregex: {regex}\n", "e.yaml")


def test_missing_bug_and_version_are_named() -> None:
    with pytest.raises(SignatureError) as caught:
        parse_signature("regex: x\n", "m.yaml")
    messages = {p.path: p.message for p in caught.value.problems}
    assert "every signature names its bug" in messages["bug"]
    assert "version: 1" in messages["version"]


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD.replace("version: 1", "version: 2"), "version 2 is not one"),
    (GOOD.replace("https://bugs.example.test/1", "LP1234"), "not a bug URL"),
    (GOOD + "files: ['../etc/passwd']\n", "not a file inside"),
    (GOOD + "files: ['/var/log/syslog']\n", "not a file inside"),
    (GOOD + "results: [SUCCESS]\n", "not failures"),
    (GOOD + "results: [BROKEN]\n", "results"),
    ("- a list\n", "a signature file is a mapping"),
])
def test_bad_values_are_refused(text: str, expected: str) -> None:
    with pytest.raises(SignatureError, match=expected):
        parse_signature(text, "v.yaml")


def test_load_signature_refuses_other_suffixes_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match=r"ends in \.yaml"):
        load_signature(write(tmp_path, "a.txt", GOOD))
    with pytest.raises(SignatureError, match="file not found"):
        load_signature(tmp_path / "none.yaml")


def test_load_directory_keeps_the_good_and_names_the_bad(tmp_path: Path) -> None:
    write(tmp_path, "1.yaml", GOOD)
    write(tmp_path, "2.yaml", "version: 1\nbug: https://b/2\nregex: '('\n")
    write(tmp_path, "1.yml", GOOD)  # the same name twice
    write(tmp_path, "notes.txt", "not a signature")
    signatures, errors = load_directory(tmp_path)
    assert [s.name for s in signatures] == ["1"]
    assert sorted(Path(e.file).name for e in errors) == ["1.yml", "2.yaml"]


def test_the_repositorys_signatures_are_valid_and_match_their_bugs() -> None:
    signatures, errors = load_directory(REPO_SIGNATURES)
    assert errors == []
    by_name = {s.name: s for s in signatures}
    assert len(by_name) >= 4
    samples = {
        "1253896": "tempest.lib.exceptions.SSHTimeout: Connection to the 172.24.5.3 via SSH "
                   "timed out.",
        "1254890": "Details: Timed out waiting for thing 7f2c-aa to become ACTIVE",
        "1260311": "hudson.remoting: java.io.InterruptedIOException",
    }
    for name, line in samples.items():
        assert by_name[name].pattern.search(f"2026-12-07 10:00:00.000 | {line}\n"), name
        assert not by_name[name].pattern.search("2026-12-07 10:00:00.000 | all good\n")


# --- the matcher --------------------------------------------------------------------------


def build_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "build"
    for name, text in files.items():
        write((directory / name).parent, Path(name).name, text)
    return directory


def test_scope_results_and_files(tmp_path: Path) -> None:
    directory = build_dir(tmp_path, {"job-output.txt": "x | No space left: disk full\n",
                                     "logs/screen-n-cpu.txt": "iSCSI device not found\n"})
    signatures = [
        parse_signature(GOOD, "full.yaml"),
        parse_signature(GOOD + "projects: ['other/*']\n", "other-project.yaml"),
        parse_signature(GOOD + "jobs: ['tempest-*']\n", "tempest.yaml"),
        parse_signature(GOOD + "jobs: ['uni?']\nprojects: [org/nova]\n", "scoped.yaml"),
        parse_signature("version: 1\nbug: https://b/iscsi\nregex: iSCSI device\n"
                        "files: ['**/screen-n-cpu.txt']\n", "iscsi.yaml"),
        parse_signature("version: 1\nbug: https://b/iscsi\nregex: iSCSI device\n",
                        "iscsi-in-console.yaml"),  # the default file does not have it
        parse_signature(GOOD + "results: [TIMED_OUT]\n", "timeouts-only.yaml"),
    ]
    source = DirectorySource(directory)

    def names(result: Result) -> list[str]:
        return [k.signature for k in match_build(signatures, source, project="org/nova",
                                                 job="unit", result=result, max_bytes=4096)]

    assert names(Result.FAILURE) == ["full", "scoped", "iscsi"]
    assert names(Result.TIMED_OUT) == ["full", "scoped", "iscsi", "timeouts-only"]
    # Successes are always tried (a match shows a signature that is too broad).
    assert names(Result.SUCCESS) == ["full", "scoped", "iscsi", "timeouts-only"]
    assert names(Result.SKIPPED) == []
    found = match_build(signatures[:1], source, project="p", job="j", result=Result.FAILURE,
                        max_bytes=4096)
    assert found == [KnownFailure(signature="full", bug="https://bugs.example.test/1")]


def test_each_file_is_read_once_per_build(tmp_path: Path) -> None:
    directory = build_dir(tmp_path, {"job-output.txt": "nothing to see\n"})
    reads: list[str] = []

    class Counting(DirectorySource):
        def read(self, name: str, max_bytes: int) -> str | None:
            reads.append(name)
            return super().read(name, max_bytes)

    signatures = [parse_signature(GOOD, f"{i}.yaml") for i in range(5)]
    assert match_build(signatures, Counting(directory), project="p", job="j",
                       result=Result.FAILURE, max_bytes=4096) == []
    assert reads == ["job-output.txt"]


def test_the_byte_cap_reads_head_and_tail_only(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    middle = "filler line\n" * 10_000
    path.write_text("HEAD marker\n" + middle + "TAIL marker\n")
    text = read_bounded(path, 4096)
    assert len(text.encode()) < 4096 + 100
    assert "HEAD marker" in text and "TAIL marker" in text
    assert "bytes not read" in text
    # A small file is read whole.
    small = write(tmp_path, "small.txt", "a\nb\n")
    assert read_bounded(small, 4096) == "a\nb\n"
    # A line only in the skipped middle is not found: the cap is real.
    path.write_text("start\n" + middle + "MIDDLE marker\n" + middle + "end\n")
    sig_middle = parse_signature("version: 1\nbug: https://b/m\nregex: MIDDLE marker\n"
                                 "files: [big.txt]\n", "m.yaml")
    assert match_build([sig_middle], DirectorySource(tmp_path), project="p", job="j",
                       result=Result.FAILURE, max_bytes=4096) == []
    assert match_build([sig_middle], DirectorySource(tmp_path), project="p", job="j",
                       result=Result.FAILURE, max_bytes=10 * 2**20) != []


def test_globs_stay_inside_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path, "secret.txt", "disk full\n")
    directory = build_dir(tmp_path, {"job-output.txt": "fine\n"})
    (directory / "link.txt").symlink_to(outside)
    signature = parse_signature(GOOD + "files: ['*.txt']\n", "g.yaml")
    assert DirectorySource(directory).names("*.txt") == ["job-output.txt"]
    assert match_build([signature], DirectorySource(directory), project="p", job="j",
                       result=Result.FAILURE, max_bytes=4096) == []


def test_glob_regex_follows_pathlib() -> None:
    assert glob_regex("**/screen-*.txt").match("logs/a/screen-n-cpu.txt")
    assert glob_regex("**/screen-*.txt").match("screen-n-cpu.txt")
    assert not glob_regex("*.txt").match("logs/a.txt")
    assert glob_regex("logs/[ab].txt").match("logs/b.txt")


# --- the executor's library ---------------------------------------------------------------


async def test_library_reloads_and_skips_bad_files_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sigs = tmp_path / "signatures"
    write(sigs, "1.yaml", GOOD)
    library = SignatureLibrary(sigs, required=True, max_bytes=4096)
    assert [s.name for s in library.current()] == ["1"]
    caplog.set_level(logging.WARNING)
    write(sigs, "2.yaml", "version: 1\nbug: https://b/2\nregex: '(unclosed'\n")
    write(sigs, "3.yaml", "version: 1\nbug: https://b/3\nregex: 'segfault'\n")
    assert [s.name for s in library.current()] == ["1", "3"]
    warned = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(warned) == 1 and "2.yaml:3" in warned[0]
    # The build: a failure with both lines; annotate never raises.
    logs = build_dir(tmp_path, {"job-output.txt": "disk full\nsegfault\n"})
    build = BuildResult(build_id="b1", job="unit", result=Result.FAILURE)
    await library.annotate(build, logs, "org/p")
    assert [k.signature for k in build.known_failures] == ["1", "3"]
    missing = BuildResult(build_id="b2", job="unit", result=Result.FAILURE)
    await library.annotate(missing, tmp_path / "nowhere", "org/p")
    assert missing.known_failures == []
    shutil.rmtree(sigs)
    assert library.current() == []


def test_config_check_fails_on_a_bad_signature(tmp_path: Path) -> None:
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text("state-dir: state\nsignatures:\n  directory: sigs\n")
    config = parse_config(config_file.read_text(), config_file)
    with pytest.raises(Exception, match="not a directory"):
        check_signatures(config, config_file)
    write(tmp_path / "sigs", "1.yaml", GOOD)
    assert check_signatures(config, config_file) == 1
    write(tmp_path / "sigs", "2.yaml", GOOD + "typo: 1\n")
    with pytest.raises(Exception) as caught:
        check_signatures(config, config_file)
    text = str(caught.value)
    assert "lockmaster.yaml:3" in text and "2.yaml:4" in text and "unknown key" in text
    # The default directory (not configured) may be absent.
    default = parse_config("state-dir: state\n", tmp_path / "other" / "lockmaster.yaml")
    assert check_signatures(default) == 0


# --- over HTTP, and the history trial -----------------------------------------------------


def test_http_source_lists_globs_and_reads_bounded(tmp_path: Path) -> None:
    root = tmp_path / "store"
    build_dir(root, {})
    directory = root / "build"
    write(directory / "logs" / "n", "screen-n-cpu.txt", "iSCSI device not found\n")
    write(directory, "job-output.txt", "HEAD\n" + "x\n" * 5000 + "TAIL\n")
    server = LogServer(root, port=free_port()).start()
    try:
        with httpx.Client(timeout=10) as client:
            source = HttpSource(f"http://127.0.0.1:{server.port}/build/", client)
            assert source.names("**/screen-*.txt") == ["logs/n/screen-n-cpu.txt"]
            assert source.names("job-output.txt") == ["job-output.txt"]
            text = source.read("job-output.txt", 1024)
            assert text is not None and "HEAD" in text and "TAIL" in text
            assert "bytes not read" in text
            assert source.read("missing.txt", 1024) is None
    finally:
        server.stop()


def test_try_signature_counts_hits_too_broad_and_newly_classified(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    texts = {"a": "disk full\n", "b": "disk full\n", "c": "fine\n", "d": "disk full\n"}
    for name, text in texts.items():
        write(root / name, "job-output.txt", text)
    config = parse_config(f"state-dir: state\nlogs: {{url: 'http://logs.test/', root: '{root}'}}\n",
                          tmp_path / "lockmaster.yaml")
    url = "http://logs.test/"
    builds = [
        StoredBuild("1", "p", "unit", "FAILURE", f"{url}a/", known=[]),
        StoredBuild("2", "p", "unit", "FAILURE", f"{url}b/", known=["other"]),
        StoredBuild("3", "p", "unit", "FAILURE", f"{url}c/"),
        StoredBuild("4", "p", "unit", "SUCCESS", f"{url}d/"),
        StoredBuild("5", "p", "unit", "FAILURE", f"{url}gone/"),
        StoredBuild("6", "p", "unit", "CANCELED", f"{url}a/"),
    ]
    signature = parse_signature(GOOD, "full.yaml")
    locator = LogLocator(config)
    report = try_signature(signature, builds, locator.source, max_bytes=4096)
    locator.close()
    assert [b.uuid for b in report.failures] == ["1", "2"]
    assert [b.uuid for b in report.successes] == ["4"]
    assert [b.uuid for b in report.newly_classified] == ["1"]
    assert [b.uuid for b in report.no_logs] == ["5"]
    assert report.considered == 6 and report.tried == 4
    text = "\n".join(report.lines())
    assert "TOO BROAD" in text and "would classify 1 failure(s)" in text
    assert f"{url}a/" in text and "already classified as other" in text
    nothing = try_signature(parse_signature(GOOD.replace("disk full", "kernel panic"), "k.yaml"),
                            builds, LogLocator(config).source, max_bytes=4096)
    assert not nothing.matched and "matched nothing in 4 build(s)" in "\n".join(nothing.lines())


def test_try_signature_reads_the_http_log_store(tmp_path: Path) -> None:
    """Driver http: the history's logs come from the log store server, by their log URLs."""
    root = tmp_path / "store"
    write(root / "00/100/1/check/unit/a", "job-output.txt", "x | disk full\n")
    write(root / "00/100/1/check/unit/b", "job-output.txt", "x | fine\n")
    token = write(tmp_path, "token", "secret-token\n")
    server = LogServer(root, port=free_port(), token_file=token).start()
    try:
        base = f"http://127.0.0.1:{server.port}/"
        config = parse_config(
            f"state-dir: state\nlogs:\n  url: '{base}'\n  store: {{driver: http, url: '{base}', "
            f"token-file: '{token}'}}\n", tmp_path / "lockmaster.yaml")
        builds = [StoredBuild("a", "p", "unit", "FAILURE", f"{base}00/100/1/check/unit/a/"),
                  StoredBuild("b", "p", "unit", "FAILURE", f"{base}00/100/1/check/unit/b/"),
                  StoredBuild("c", "p", "unit", "FAILURE", f"{base}00/100/1/check/unit/c/")]
        locator = LogLocator(config)
        try:
            report = try_signature(parse_signature(GOOD, "full.yaml"), builds, locator.source,
                                   max_bytes=4096)
        finally:
            locator.close()
    finally:
        server.stop()
    assert [b.uuid for b in report.failures] == ["a"]
    assert report.tried == 3  # c's log is missing on the server: tried, nothing read
