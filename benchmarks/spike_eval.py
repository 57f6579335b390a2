"""Precision, recall and detection delay of the spike watch on generated ticket streams.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/spike_eval.py [--seeds 10] [--min-customers 5] [--hours 3]

For each area volume (tickets per hour) and spike size (2x, 3x, 5x the normal rate for
``--hours`` hours), and each seed: four weeks of one area's tickets from the generator,
one spike at a random hour of the last two weeks. The tickets go, one by one in time
order, through :class:`detectors.backtest.SpikeBacktest` (the worker's
:class:`detectors.VolumeWatch` on hourly windows of distinct customers, judged as each
total grows, at every scale), so a spike is one episode however many windows and
scales see it.

An episode is a true positive when it is detected (``detected_at``) during the spike;
the delay is from the spike's start to that moment, in minutes. Any other episode is a
false one.
"""

from __future__ import annotations

import argparse
import random
import statistics
from datetime import UTC, datetime, timedelta

from detectors.backtest import SpikeBacktest
from pipeline.testbed.generator import Area, Spike, TicketGenerator

START = datetime(2026, 3, 2, tzinfo=UTC)


def run(volume: float, factor: float, hours: int, seed: int, min_customers: int) -> tuple[bool, int, float | None]:
    """Whether the spike was found, the false episodes, and the delay (minutes) of one stream."""
    rng = random.Random(seed)
    spike_start = START + timedelta(days=rng.randint(14, 24), hours=rng.randint(0, 23))
    gen = TicketGenerator(
        START,
        days=28,
        areas=[Area("a", volume)],
        seed=seed,
        label_rate=1.0,
        customers=5000,
        resend_rate=0.0,
        late_rate=0.0,
        spikes=[Spike("a", spike_start, hours, factor)],
    )
    tickets = sorted(
        (
            datetime.fromisoformat(str(t.payload["created_at"])).timestamp(),
            str(t.payload["id"]),
            str(t.payload["customer_id"]),
        )
        for t in gen.tickets()
    )
    backtest = SpikeBacktest(3600, min_customers=min_customers)
    seen = set()
    for ts, ticket_id, customer in tickets:
        if ticket_id not in seen:  # each ticket once, as the counting stage does
            seen.add(ticket_id)
            backtest.add(ts, "a", None, ticket_id, customer)
    backtest.finish((START + timedelta(days=28)).timestamp())
    lo, hi = spike_start.timestamp(), spike_start.timestamp() + hours * 3600
    found, false_episodes, delay = False, 0, None
    for episode in backtest.episodes:
        at = datetime.fromisoformat(episode["detected_at"]).timestamp()
        if lo <= at < hi and not found:
            found, delay = True, (at - lo) / 60
        elif not lo <= at < hi:
            false_episodes += 1
    return found, false_episodes, delay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--min-customers", type=int, default=5)
    parser.add_argument("--hours", type=int, default=3, help="how long each spike lasts")
    args = parser.parse_args()
    print(
        f"VolumeWatch defaults (scales 1 h, 6 h, 24 h), alert score 0.4, min customers {args.min_customers}, "
        f"{args.hours}-hour spikes, {args.seeds} seeds x 4 weeks per row"
    )
    print("| tickets/h | spike | recall | precision | false episodes / week | delay, median (min) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for volume in (1.0, 5.0, 20.0):
        for factor in (2.0, 3.0, 5.0):
            results = [run(volume, factor, args.hours, seed, args.min_customers) for seed in range(args.seeds)]
            tp = sum(found for found, _, _ in results)
            fp = sum(f for _, f, _ in results)
            delays = [d for _, _, d in results if d is not None]
            precision = tp / (tp + fp) if tp + fp else float("nan")
            median = statistics.median(delays) if delays else float("nan")
            print(
                f"| {volume:g} | {factor:g}x | {tp / len(results):.2f} | {precision:.2f} | "
                f"{fp / (len(results) * 4):.2f} | {median:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
