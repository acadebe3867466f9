"""examples/moving_avg.py that SIGKILLs itself at its Nth point, once per marker file.

Usage: kill_once.py MARKER N

The first agent to reach its Nth point creates MARKER and kills itself with
SIGKILL (no goodbye, unflushed output lost); while MARKER exists, no agent
does: so exactly one agent dies, mid-stream, in a whole pipeline (or job) run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load_moving_avg() -> Any:
    spec = importlib.util.spec_from_file_location("moving_avg", os.path.join(ROOT, "examples", "moving_avg.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    marker, kill_at = sys.argv[1], int(sys.argv[2])
    moving_avg = load_moving_avg()

    class KillOnce(moving_avg.MovingAverageHandler):  # type: ignore[misc,name-defined]
        points = 0

        def point(self, point: Any) -> None:
            self.points += 1
            if self.points == kill_at:
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
            super().point(point)

    return int(moving_avg.main(KillOnce, []))


if __name__ == "__main__":
    sys.exit(main())
