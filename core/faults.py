"""Named points where a test kills this process for real, to prove that a crash there loses nothing.

    VECGUARD_KILL_AT=reindex.swap vecguard reindex --config C    # SIGKILL between the two renames

The variable is read once at import; unset (always, outside tests) a point costs one comparison.
"""

from __future__ import annotations

import os
import signal

_KILL_AT = os.environ.get("VECGUARD_KILL_AT") or None


def kill_point(name: str) -> None:
    """SIGKILL this process here when VECGUARD_KILL_AT names this point."""
    if _KILL_AT == name:
        os.kill(os.getpid(), signal.SIGKILL)
