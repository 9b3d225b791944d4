"""The publishing library's small parts: heartbeats while tools run, parsers, the prune rule,
the pointer switch, key handling, error classification."""

from __future__ import annotations

import base64
import gzip
import json
import os
import threading
import time
from pathlib import Path

import pytest

from lockmaster.publishing import (
    BuildManifest,
    HostKeyMismatch,
    MirrorUnavailable,
    PublishRequest,
    RsyncSSHMirror,
    ToolError,
    metadata,
)
from lockmaster.publishing.mirrors import _connection_error
from lockmaster.publishing.provenance import load_manifest
from lockmaster.publishing.signing import dearmor
from lockmaster.publishing.snapshots import plan_prune, read_pointer, remove_tree, switch_pointer
from lockmaster.publishing.tools import Completed, Heartbeat, is_plain_relative, run


def test_long_tool_runs_send_heartbeats() -> None:
    beats: list[str] = []
    started = time.monotonic()
    run(["sleep", "4.3"], what="sleeping tool", progress=beats.append)
    assert time.monotonic() - started >= 4.3
    assert len(beats) >= 2 and all("sleeping tool: running for" in b for b in beats)


def test_a_raising_progress_kills_the_tool(tmp_path: Path) -> None:
    marker = tmp_path / "done"

    def cancel(_: str) -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):  # raised at the first heartbeat, after 2 s
        run(["sh", "-c", f"sleep 2.5 && touch {marker}"], what="t", progress=cancel)
    time.sleep(max(0.0, 3.2 - (time.monotonic() - started)))
    assert not marker.exists(), "the child was killed, not left running"


def test_tool_errors_say_what_and_how() -> None:
    with pytest.raises(ToolError) as caught:
        run(["sh", "-c", "echo broken >&2; exit 3"], what="the tool", hint="do the thing")
    text = str(caught.value)
    assert "the tool failed (exit 3)" in text and "broken" in text and "do the thing" in text
    assert caught.value.returncode == 3
    with pytest.raises(ToolError, match="not installed"):
        run(["no-such-tool-xyz"], what="x")


def test_heartbeat_throttles_ticks_not_steps() -> None:
    seen: list[str] = []
    beat = Heartbeat(seen.append, "p", interval=60)
    beat.tick("a")
    beat.tick("b")
    beat.step("c done")
    assert seen == ["p: a", "p: c done"]


def test_release_and_packages_parsing() -> None:
    release = metadata.parse_release(
        "Origin: x\nCodename: bookworm\nSHA256:\n abc 12 main/binary-amd64/Packages\n"
        " def 7 main/binary-amd64/Packages.gz\nMD5Sum:\n 0a 12 main/binary-amd64/Packages\n")
    files = metadata.release_files(release)
    assert files["main/binary-amd64/Packages"].hashes == {"sha256": "abc", "md5": "0a"}
    assert files["main/binary-amd64/Packages.gz"].size == 7
    with pytest.raises(metadata.MetadataError):
        metadata.release_files({"SHA256": " abc twelve path"})
    entries = metadata.parse_packages(
        "Package: a\nVersion: 1\nArchitecture: all\nFilename: pool/a.deb\nSize: 3\n"
        "SHA256: FF\nDescription: x\n more\n\nPackage: b\nVersion: 2\nArchitecture: amd64\n"
        "Filename: pool/b.deb\nSize: 4\nMD5sum: 00\n")
    assert [(e.package, e.filename, e.hashes) for e in entries] == [
        ("a", "pool/a.deb", {"sha256": "ff"}), ("b", "pool/b.deb", {"md5": "00"})]
    with pytest.raises(metadata.MetadataError):
        metadata.parse_packages("Package: c\nVersion: 1\n")
    assert metadata.decompress("x.gz", gzip.compress(b"hi")) == b"hi"
    assert metadata.strip_compression("a/Packages.xz") == "a/Packages"


def test_repomd_and_primary_parsing() -> None:
    repomd = b"""<?xml version="1.0"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>7</revision>
<data type="primary"><checksum type="sha256">AA</checksum>
<open-checksum type="sha256">bb</open-checksum><location href="repodata/x-primary.xml.zst"/>
<size>5</size><open-size>9</open-size></data></repomd>"""
    revision, datas = metadata.parse_repomd(repomd)
    assert revision == "7"
    assert datas[0].checksum == ("sha256", "aa") and datas[0].open_size == 9
    primary = b"""<metadata xmlns="http://linux.duke.edu/metadata/common" packages="1">
<package type="rpm"><name>hello</name><arch>noarch</arch>
<version epoch="2" ver="1.0" rel="1"/><checksum type="sha256" pkgid="YES">cc</checksum>
<size package="10" installed="1" archive="2"/><location href="Packages/hello.rpm"/></package>
</metadata>"""
    [entry] = metadata.parse_primary(primary)
    assert (entry.name, entry.evr, entry.href, entry.size) == ("hello", "2:1.0-1",
                                                               "Packages/hello.rpm", 10)
    with pytest.raises(metadata.MetadataError, match="another base URL"):
        metadata.parse_primary(primary.replace(b'<location href=',
                                               b'<location xml:base="http://evil/" href='))


def test_prune_keeps_current_previous_and_young() -> None:
    created = {"a": 0.0, "b": 100.0, "c": 200.0, "d": 5000.0}
    # b was replaced by c at 200, a by b at 100; d is current, c previous
    assert plan_prune(created, {"d", "c"}, grace=1000, now=1150) == ["a"]
    assert plan_prune(created, {"d", "c"}, grace=1000, now=1250) == ["a", "b"]
    assert plan_prune(created, {"d", "c"}, grace=1000, now=900) == []
    assert plan_prune(created, {"d", "c"}, grace=0, now=200) == ["a", "b"]
    assert plan_prune(created, {"d", "c"}, grace=0, now=150) == ["a"]
    # an abandoned build (never followed) counts from its own creation
    assert plan_prune({"x": 0.0, "cur": 10.0, "lost": 20.0}, {"cur"}, 100, 115) == ["x"]
    assert plan_prune({"x": 0.0, "cur": 10.0, "lost": 20.0}, {"cur"}, 100, 125) == ["x", "lost"]


def test_pointer_switch_is_one_rename(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "snapshots" / name).mkdir(parents=True)
        (tmp_path / "snapshots" / name / "file").write_text(name)
    switch_pointer(tmp_path, "a")
    assert read_pointer(tmp_path / "current") == "a"
    stop = threading.Event()
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            seen.add((tmp_path / "current" / "file").read_text())  # never missing

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(300):
        switch_pointer(tmp_path, "b")
        switch_pointer(tmp_path, "a")
    stop.set()
    thread.join()
    assert seen == {"a", "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "snapshots"], "no temp links"
    with pytest.raises(Exception, match="missing snapshot"):
        switch_pointer(tmp_path, "nope")
    (tmp_path / "other").symlink_to("elsewhere")
    with pytest.raises(Exception, match="not to snapshots"):
        read_pointer(tmp_path / "other")


def test_remove_tree_with_heartbeats(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "a/b").mkdir(parents=True)
    for n in range(50):
        (tree / "a/b" / str(n)).write_text("x")
    (tree / "link").symlink_to(tmp_path)  # not followed
    (tmp_path / "keep").write_text("k")
    beats: list[str] = []
    remove_tree(tree, Heartbeat(beats.append, interval=0))
    assert not tree.exists() and (tmp_path / "keep").exists()
    assert beats and "removing t" in beats[-1]


def test_manifest_tolerates_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"source_commit": "a" * 40, "new_field": [1], "packages": [
        {"file": "deb/x.deb", "format": "deb", "name": "x", "version": "1", "arch": "all",
         "sha256": "0" * 64, "size": 1, "built_on": "vm-3"}]}))
    manifest = load_manifest(path)
    assert isinstance(manifest, BuildManifest) and manifest.packages[0].name == "x"


def test_paths_and_ids_are_checked() -> None:
    assert is_plain_relative("pool/main/a.deb")
    for bad in ("", "/etc/passwd", "a/../b", "./a", "a//b", "a\\b"):
        assert not is_plain_relative(bad)
    for bad_id in ("../x", "a/b", ".hidden", "x.json", ""):
        with pytest.raises(ValueError, match="snapshot id"):
            PublishRequest(snapshot_id=bad_id, manifest=Path("m"), git_repo=Path("g"),
                           branch="main")


def test_dearmor_matches_gpg_binary_export(tmp_path: Path) -> None:
    body = os.urandom(300)
    armored = (b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\n"
               + base64.encodebytes(body) + b"=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert dearmor(armored) == body
    assert dearmor(body) == body


def test_ssh_failures_are_classified(tmp_path: Path) -> None:
    mirror = RsyncSSHMirror(name="m", host="h", user="u", key_file=tmp_path / "k",
                            known_hosts_file=tmp_path / "kh", path="/srv/m")

    def fail(stderr: str) -> Exception:
        return _connection_error(mirror, "sync", Completed([], 255, "", stderr))

    assert isinstance(fail("ssh: connect to host h port 22: Connection refused"),
                      MirrorUnavailable)
    assert isinstance(fail("Host key verification failed."), HostKeyMismatch)
    denied = fail("u@h: Permission denied (publickey).")
    assert not isinstance(denied, MirrorUnavailable) and not denied.retryable


def test_file_system_failures_are_publish_errors(tmp_path: Path) -> None:
    from lockmaster.publishing import DirectoryMirror, MirrorError, PublishError, prune_mirror
    from lockmaster.publishing.mirrors import _Local

    (tmp_path / "a-file").write_text("x")
    mirror = DirectoryMirror(name="m", path=tmp_path / "a-file" / "mirror")
    with pytest.raises(PublishError, match=r"prune mirror m: .*Not a directory"):
        prune_mirror(mirror, 60)
    # a failing remote step on a directory mirror is a MirrorError with the tool's output
    local = _Local(DirectoryMirror(name="m", path=tmp_path))
    with pytest.raises(MirrorError, match="exit 4") as caught:
        local.sh("echo nope >&2; exit 4", what="step", beat=Heartbeat(None))
    assert "nope" in str(caught.value) and caught.value.returncode == 4  # type: ignore
