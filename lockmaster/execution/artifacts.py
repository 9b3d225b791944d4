"""Build artifacts (Zuul's "artifacts"): what a job leaves in `$LOCKMASTER_ARTIFACTS` is copied
beside its log and served with it; what a build receives is in `$LOCKMASTER_ARTIFACTS_FILE`.

On the node, the workspace root holds
    artifacts/            $LOCKMASTER_ARTIFACTS: the job writes what it produces here
    artifacts.in.json     $LOCKMASTER_ARTIFACTS_FILE: the artifacts this build receives, a JSON
                          list of {name, url, job, project, change, patchset, metadata}
In the log storage, `<log_path>/artifacts/` beside `<log_path>/job-output.txt`, served at
`<log url>artifacts/...`.

Every top-level entry of the artifacts directory is an artifact named after it, unless the job
writes `artifacts.json` there, `{"<name>": {"path": "<relative path>", "metadata": {...}}}`:
then exactly those (entries that are invalid or lead outside are left out, each with a log line;
a file that is not a JSON object is ignored with a log line).
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from urllib.parse import quote

from pydantic import ValidationError

from lockmaster.model.base import Model
from lockmaster.model.build import Artifact, BuildRequest

ARTIFACTS_DIR = "artifacts"  # in the workspace root, and beside the build's log
ARTIFACTS_IN = "artifacts.in.json"  # in the workspace root: what the build receives
ARTIFACTS_INDEX = "artifacts.json"  # optional, in the artifacts directory: names them
# Per build. Room for a package build's binaries plus a per-change repository of them (a few
# MiB to a couple of hundred for the biggest packages), while a job that drops its whole
# workspace, a VM image or a core dump there by mistake cannot fill the log server: artifacts are
# kept as long as the logs, for every build.
MAX_BYTES = 512 * 2**20
# Copying the artifacts back has its own budget (the job's may be spent): build_limits.ARTIFACTS.


class _Declared(Model):
    """One entry of artifacts.json."""

    path: str
    metadata: dict[str, str] = {}


def write_inputs(path: Path, artifacts: list[Artifact]) -> None:
    """The artifacts a build receives, as a JSON list (`[]` when none)."""
    data = [artifact.model_dump(mode="json") for artifact in artifacts]
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _inside(path: str) -> str | None:
    """`path` normalized, relative to the artifacts directory ("." is all of it); None if it
    is absolute or leaves it."""
    if not path or path.startswith("/") or "\0" in path:
        return None
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def describe(tree: Path, base_url: str, request: BuildRequest) -> tuple[list[Artifact], list[str]]:
    """The artifacts in `tree` (the downloaded artifacts directory, which holds no symbolic
    links), served under `base_url` (ending with "/"), and the log lines about what was left out.
    Blocking: run it in a thread."""
    notes: list[str] = []
    change = request.change

    def artifact(name: str, path: str, metadata: dict[str, str]) -> Artifact:
        directory = (tree / path).is_dir()
        url = base_url if path == "." else base_url + quote(path) + ("/" if directory else "")
        return Artifact(name=name, url=url, job=request.job.name, project=change.project,
                        change=change.number, patchset=change.patchset, metadata=metadata)

    index = tree / ARTIFACTS_INDEX
    declared: dict[str, object] | None = None
    if index.is_file():
        try:
            loaded = json.loads(index.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError(f"a JSON object is expected, not {type(loaded).__name__}")
            declared = loaded
        except (ValueError, UnicodeDecodeError) as exc:
            notes.append(f"Artifacts: {ARTIFACTS_INDEX} ignored (every entry is listed instead):"
                         f" {exc}")
    if declared is None:
        found = sorted(entry.name for entry in tree.iterdir() if entry.name != ARTIFACTS_INDEX)
        return [artifact(name, name, {}) for name in found], notes
    artifacts: list[Artifact] = []
    root = tree.resolve()
    for name, entry in declared.items():
        try:
            spec = _Declared.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'entry'}: {error['msg']}"
                for error in exc.errors())
            notes.append(f"Artifacts: {name!r} in {ARTIFACTS_INDEX} left out: {problems}")
            continue
        path = _inside(spec.path)
        if not name.strip():
            notes.append(f"Artifacts: an unnamed entry in {ARTIFACTS_INDEX} left out")
        elif path is None:
            notes.append(f"Artifacts: {name!r} in {ARTIFACTS_INDEX} left out: path {spec.path!r}"
                         f" is not inside the artifacts directory")
        elif not (tree / path).exists() or not (tree / path).resolve().is_relative_to(root):
            notes.append(f"Artifacts: {name!r} in {ARTIFACTS_INDEX} left out: {spec.path!r} "
                         f"was not collected (missing, or a link leading outside)")
        else:
            artifacts.append(artifact(name, path, spec.metadata))
    return artifacts, notes
