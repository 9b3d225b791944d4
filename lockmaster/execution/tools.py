"""lockmaster's own tools, copied into every workspace (`.lockmaster/`): build nodes run them with
their own python3 and need nothing of lockmaster installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import lockmaster.packaging

TOOLS_DIR = ".lockmaster"
# pkgtool.py and the pkg_*.py modules it imports (standard library only, one directory).
TOOLS = sorted(Path(lockmaster.packaging.__file__).parent.glob("pkg*.py"))


def install_tools(workspace: Path) -> Path:
    """Copy the tools into the prepared workspace; returns their directory."""
    target = workspace / TOOLS_DIR
    target.mkdir(exist_ok=True)
    for tool in TOOLS:
        shutil.copy2(tool, target / tool.name)
    return target
