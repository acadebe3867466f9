"""Write examples/data/hosts.lp: 120 series of CPU data for the Beam example and tests.

Deterministic (a fixed seed): 120 hosts in 4 regions, 10 points each, every 10 s
from 2017-05-19T00:00:00Z, ``usage_user`` around 10 with a spike or a dip on
every third host (which ``examples/outliers.py`` finds). Rerun after changing
anything here; ``tests/adapters/test_beam_extra.py`` checks the file matches.

    python3 scripts/gen_sample_hosts.py
"""

from __future__ import annotations

import os
import random
import sys

HOSTS = 120
POINTS = 10
START_NS = 1495152000 * 10**9
STEP_NS = 10 * 10**9
REGIONS = ("us-east", "us-west", "eu-west", "ap-south")
PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "data", "hosts.lp")


def lines() -> list[str]:
    """The file's lines, host by host (each host's points in time order)."""
    rng = random.Random(20170519)
    out = []
    for h in range(HOSTS):
        host, region = f"h{h:03d}", REGIONS[h % len(REGIONS)]
        spike = rng.randrange(POINTS) if h % 3 == 0 else -1
        for i in range(POINTS):
            value = rng.gauss(10.0, 1.0)
            if i == spike:
                value = rng.choice((rng.uniform(30.0, 40.0), rng.uniform(0.5, 2.0)))
            out.append(f"cpu,host={host},region={region} usage_user={value:.2f} {START_NS + i * STEP_NS}")
    return out


def main() -> int:
    with open(PATH, "w", encoding="utf-8") as f:
        f.write("\n".join(lines()) + "\n")
    print(f"wrote {PATH}: {HOSTS} series x {POINTS} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
