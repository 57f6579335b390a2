"""CPU and memory of the spike watch: per ticket, per closed window, per watch.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/spike_cost.py [--tickets-per-hour 5] [--weeks 4]

One area's watch (:class:`detectors.VolumeWatch`, hourly windows, scales 1 h, 6 h, 24 h)
fed as the worker feeds it: each ticket's window total (distinct customers) as it grows
(:meth:`~detectors.VolumeWatch.update`), each window closed when it ends
(:meth:`~detectors.VolumeWatch.advance`). CPU time (``time.process_time``) of each part,
and the size of the pickled watch (what the worker's table holds per area, baselines drained).
"""

from __future__ import annotations

import argparse
import pickle
import time

import numpy as np

from detectors import VolumeWatch

START = 1772409600  # a Monday


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets-per-hour", type=float, default=5.0)
    parser.add_argument("--weeks", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    hours = args.weeks * 7 * 24
    counts = rng.poisson(args.tickets_per_hour, hours)
    watch = VolumeWatch("a", 3600)
    update_cpu = advance_cpu = 0.0
    for h, n in enumerate(counts):
        w = START + h * 3600
        started = time.process_time()
        watch.advance(w)
        watch.drain_baselines()  # as the worker does, each batch
        advance_cpu += time.process_time() - started
        started = time.process_time()
        for k in range(1, int(n) + 1):  # each ticket: the window's total so far
            watch.update(w, k, k, at=w + k)
        update_cpu += time.process_time() - started
    tickets = int(counts.sum())
    print(
        f"{args.tickets_per_hour:g} tickets/h, {args.weeks} weeks: {tickets} tickets, {hours} windows; "
        f"update {update_cpu / tickets * 1e6:.1f} us a ticket, advance {advance_cpu / hours * 1e6:.1f} us a window "
        f"(all: {(update_cpu + advance_cpu) / tickets * 1e6:.1f} us a ticket); "
        f"pickled watch {len(pickle.dumps(watch))} bytes (measured on a loaded machine)"
    )


if __name__ == "__main__":
    main()
