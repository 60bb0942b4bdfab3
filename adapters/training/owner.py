"""Who holds a job: ``host:pid:start-time:nonce`` of the process that claimed it, and whether
that process is known to be gone.

A lease expires by itself when its holder stops renewing it, wherever the holder ran. The
owner string only makes a restart on the same host faster: a trainer restarted in the same
pod (same hostname) sees that the previous process is gone and takes its job back at once
instead of waiting out the lease. The start time tells a live owner from a new process that
got the dead owner's pid (after a container restart, pids start over).
"""
from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22), or
    None where that cannot be read (not Linux, process gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parens
    return fields[19] if len(fields) > 19 else None


def owner_id() -> str:
    """host:pid:start-time:nonce of this process (a new nonce per call: per job runner)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_time(pid) or ''}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str) -> bool:
    """True when the process named by ``owner`` is known to be dead: this host, and its pid
    is not alive, or is alive but started at another time (a reused pid). An owner on
    another host, or one that cannot be checked, is not known to be gone: its lease decides.
    Also reads the older ``host:pid[:start]`` forms."""
    host, _, rest = owner.partition(":")
    pid, _, rest = rest.partition(":")
    started = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's: only the start time can tell
    now = start_time(int(pid))
    return bool(started and now and started != now)
