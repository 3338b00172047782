"""File descriptors: a node under a connection flood must not run out of them for its API.

At start the daemon raises its soft ``RLIMIT_NOFILE`` to the hard limit (systemd's ``LimitNOFILE``,
a shell's ``ulimit -Hn``); the IP listener refuses new unauthenticated connections while fewer than a
few dozen are free (:mod:`relay.links.ip_admission`).
"""

from __future__ import annotations

import os
import resource

_FALLBACK_CEILING = 1 << 20  # when the hard limit is "unlimited": the kernel's usual nr_open


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _FALLBACK_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a kernel ceiling below the hard limit: keep what we have
            pass
    return soft


def free_file_descriptors() -> int:
    """How many more files this process may open now (Linux: counted in /proc/self/fd)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:  # no procfs: nothing to go by
        return 1 << 30
    return (1 << 30 if soft == resource.RLIM_INFINITY else soft) - used
