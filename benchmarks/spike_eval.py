"""Precision, recall and detection delay of SpikeDetector on generated ticket streams.

    .venv/bin/python benchmarks/spike_eval.py [--seeds 10] [--min-customers 5]

For each area volume (tickets per hour) and spike size (2x, 3x, 5x the normal rate for
three hours), and each seed: four weeks of one area's tickets from the generator, one
spike at a random hour of the last two weeks. The detector sees each hourly window
every 10 minutes while it fills (early alerts: the count so far against the share of
the window gone), then learns it when it closes; alerts go through the EpisodeTracker,
so a spike that alerts in three windows is one episode.

An episode is a true positive when it opens during the spike's hours; the delay is
from the spike's start to that first alert, in minutes (and in windows).
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from detectors import EpisodeTracker, SpikeDetector
from pipeline.testbed.generator import Area, Spike, TicketGenerator

START = datetime(2026, 3, 2, tzinfo=UTC)
CHECKS = (10, 20, 30, 40, 50, 60)  # minutes into the window


def run(volume: float, factor: float, seed: int, min_customers: int) -> tuple[bool, int, float | None]:
    rng = random.Random(seed)
    spike_start = START + timedelta(days=rng.randint(14, 26), hours=rng.randint(0, 23))
    gen = TicketGenerator(
        START,
        days=28,
        areas=[Area("a", volume)],
        seed=seed,
        label_rate=1.0,
        customers=5000,
        resend_rate=0.0,
        late_rate=0.0,
        spikes=[Spike("a", spike_start, 3, factor)],
    )
    firsts: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for t in gen.tickets():
        ts = datetime.fromisoformat(str(t.payload["created_at"])).timestamp()
        firsts[int(ts // 3600 * 3600)].append((ts, str(t.payload["customer_id"])))
    det = SpikeDetector()
    tracker = EpisodeTracker("a", alert_score=0.4, min_customers=min_customers)
    spike_lo, spike_hi = spike_start.timestamp(), spike_start.timestamp() + 3 * 3600
    found, false_episodes, delay = False, 0, None
    for hour in range(28 * 24):
        w = int(START.timestamp()) + hour * 3600
        tickets = sorted(firsts.get(w, []))
        for minute in CHECKS:
            upto = [c for ts, c in tickets if ts < w + minute * 60]
            x = {"t": w, "y": len(upto), "customers": len(set(upto)), "fraction": minute / 60}
            event, _ = tracker.observe(w, det.score_one(x), x["y"], det.expected(w, minute / 60), x["customers"])
            if event == "opened":
                moment = w + minute * 60
                if spike_lo <= w < spike_hi and not found:
                    found, delay = True, (moment - spike_lo) / 60
                elif not spike_lo <= w < spike_hi:
                    false_episodes += 1
        customers = {c for _, c in tickets}
        det.learn_one({"t": w, "y": len(tickets), "customers": len(customers)})
    return found, false_episodes, delay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--min-customers", type=int, default=5)
    args = parser.parse_args()
    print(
        f"SpikeDetector defaults, alert score 0.4, min customers {args.min_customers}, "
        f"{args.seeds} seeds x 4 weeks per row"
    )
    print("| tickets/h | spike | recall | precision | false episodes / week | delay, median (min) | delay (windows) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for volume in (1.0, 5.0, 20.0):
        for factor in (2.0, 3.0, 5.0):
            results = [run(volume, factor, seed, args.min_customers) for seed in range(args.seeds)]
            tp = sum(found for found, _, _ in results)
            fp = sum(f for _, f, _ in results)
            delays = [d for _, _, d in results if d is not None]
            precision = tp / (tp + fp) if tp + fp else float("nan")
            median = statistics.median(delays) if delays else float("nan")
            print(
                f"| {volume:g} | {factor:g}x | {tp / len(results):.2f} | {precision:.2f} | "
                f"{fp / (len(results) * 4):.2f} | {median:.0f} | {median / 60:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
