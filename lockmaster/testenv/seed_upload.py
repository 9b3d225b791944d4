"""Writing a seed image into the seed's disk: libvirt's upload stream, or a file for drivers
that cannot upload (the test driver)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import libvirt

from lockmaster.testenv.libvirt_conn import TEHostError


class SeedUpload(Protocol):
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


class StreamUpload:
    """virStorageVolUpload: the volume's own driver writes the bytes (real libvirt)."""

    def __init__(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> None:
        self.stream = conn.newStream(0)
        vol.upload(self.stream, 0, 0, 0)  # length 0: everything the stream sends

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self.stream.send(bytes(view))
            if sent < 0:
                raise TEHostError(f"libvirt stream refused data ({sent})")
            view = view[sent:]

    def finish(self) -> None:
        self.stream.finish()

    def abort(self) -> None:
        try:
            self.stream.abort()
        except libvirt.libvirtError:
            pass


class FileUpload:
    """For drivers without upload (the test driver): the image goes to a file under
    `image_dir/<pool>/<volume>`, renamed into place only when complete."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.file = self.part.open("wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def finish(self) -> None:
        self.file.close()
        os.replace(self.part, self.path)

    def abort(self) -> None:
        self.file.close()
        self.part.unlink(missing_ok=True)
