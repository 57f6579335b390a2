"""A worker under cProfile, counting CPU time (not wall time): what ``bench_pipeline.py --profile DIR`` starts.

    TICKETPULSE_PROFILE_OUT=worker-1.prof .venv/bin/python benchmarks/profiled_worker.py

The profile is written when the worker exits (it stops on SIGTERM, as the benchmark stops
it). Read it with ``python -m pstats``; compare runs by each function's cumulative CPU.
Profiling slows the worker several times over: compare profiles with profiles, never
with an unprofiled run's CPU.
"""

from __future__ import annotations

import atexit
import cProfile
import os
import runpy
import sys
import time


def main() -> None:
    out = os.environ["TICKETPULSE_PROFILE_OUT"]
    profile = cProfile.Profile(time.process_time)

    def dump() -> None:
        profile.disable()
        profile.dump_stats(out)

    atexit.register(dump)
    sys.argv = ["ticketpulse", "worker"]
    profile.enable()
    runpy.run_module("pipeline.commands.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
