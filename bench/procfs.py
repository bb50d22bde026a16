"""Memory and CPU of a process, read from Linux's /proc (no third-party dependency).

- `VmRSS`: resident memory now; `VmHWM`: its peak ("high water mark") since the process
  started or since the peak was last reset.
- Writing `5` to `/proc/<pid>/clear_refs` resets `VmHWM` to the current RSS (Linux 4.0+;
  allowed for the process's owner), so the peak of one load run can be measured alone.
- CPU time: `utime + stime` of `/proc/<pid>/stat` (all threads), in clock ticks.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "memory_kib", "reset_peak_rss"]

_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """`{"VmRSS": kib, "VmHWM": kib}` of a live process."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def reset_peak_rss(pid: int) -> bool:
    """Reset `VmHWM` to the current RSS; False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far, every thread included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS
