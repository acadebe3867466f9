"""examples/moving_avg.py that takes at least SECONDS for each point.

Usage: slow_moving_avg.py SECONDS

Its outputs are moving_avg's; only its pace differs: a job through it lasts at
least points x SECONDS / parallelism, long enough to kill a TaskManager in the
middle of it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from kill_once import load_moving_avg  # this folder is sys.path[0]


def main() -> int:
    delay = float(sys.argv[1])
    moving_avg = load_moving_avg()

    class Slow(moving_avg.MovingAverageHandler):  # type: ignore[misc,name-defined]
        def point(self, point: Any) -> None:
            time.sleep(delay)  # the pace is the point of this agent
            super().point(point)

    return int(moving_avg.main(Slow, []))


if __name__ == "__main__":
    sys.exit(main())
