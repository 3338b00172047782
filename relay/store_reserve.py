"""Disk space held back for FLASH: a file beside the store, given up when the disk is full.

The store's quota protects FLASH from the node's own lower classes, but not from the rest of the
disk (logs, other files) filling up. When SQLite reports the disk full, the store deletes this file
and retries what it was writing, refusing everything but FLASH until the file can be made again
(:class:`relay.store.Store`). On filesystems without ``fallocate`` the file is written out.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

_CHUNK = 64 * 1024


class DiskReserve:
    def __init__(self, path: Path, size: int) -> None:
        if size < 0:
            raise ValueError("reserve size must not be negative")
        self.path, self.size = path, size

    def restore(self) -> bool:
        """Make sure the reserve exists; False if the disk has no room for it (nothing is left half made)."""
        if self.size == 0:
            return True
        try:
            with open(self.path, "ab") as file:
                if os.fstat(file.fileno()).st_size >= self.size:
                    return True
                _allocate(file.fileno(), self.size)
                os.fsync(file.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        return True

    def release(self) -> bool:
        """Give the space back to the filesystem; False if there was none held."""
        if self.size == 0 or not self.path.exists():
            return False
        self.path.unlink()
        return True


def _allocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # the filesystem cannot fallocate
            raise
        os.lseek(fd, 0, os.SEEK_SET)
        for offset in range(0, size, _CHUNK):
            os.write(fd, bytes(min(_CHUNK, size - offset)))
