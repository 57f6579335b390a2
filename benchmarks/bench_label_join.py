"""What the label join's kept texts cost while they wait for their labels: memory, and
the garbage collector's walk over them.

    .venv/bin/python benchmarks/bench_label_join.py [--texts 200000]
        [--bodies ../shared/data/nlbse2024/issues_train.csv]

The worker keeps what the tagger reads of every ticket for ``TICKETPULSE_LABEL_HORIZON_HOURS``
(72 by default), in case a tag names it later: at 10 tickets a second, 2.6 million texts.
This keeps ``--texts`` of them the way the worker does (``LabelJoin.remember_message``, a
batch of 2,000 at a time, its offsets recorded in a ``ChunkedStore``), then reports the bytes each takes
(resident memory), how many objects each adds to those Python's collector tracks, and how
long one full collection takes with them all kept (the worker's event loop waits for it).
Generated tickets, or real bodies (a CSV with ``title`` and ``body`` columns) in turn.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from pipeline.tagging.labels import ChunkedStore, LabelJoin, entry_chars
from pipeline.tagging.tagger import TicketTagger, predicted_labels, reading_text
from pipeline.testbed.generator import TicketGenerator

sys.path.insert(0, str(Path(__file__).parent))
from nlbse_eval import load_issues

BATCH = 2000


def _resident_bytes() -> int:
    """The process's resident memory, from /proc."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--bodies", type=Path, help="a CSV of issues (title, body): real text, in turn")
    args = parser.parse_args()
    generated = [
        t.payload
        for t in TicketGenerator(datetime(2026, 3, 2, tzinfo=UTC), days=2, seed=3, scale=3).tickets()
        if not t.is_resend
    ]
    if args.bodies:
        sources = [(issue["title"], issue["body"]) for issue in load_issues(args.bodies)[0]]
    else:
        sources = [(str(t["subject"]), str(t["body"])) for t in generated]
    readings = [reading_text(subject, body) for subject, body in sources]
    # a prediction of every field, each with its margin bin, as the worker's models make it
    tagger = TicketTagger()
    tagger.process_many(generated[:3000])
    prediction, bins = tagger.predict_binned([{"reading": readings[0]}])
    first = predicted_labels(prediction[0], bins[0])
    print(f"a kept prediction: {first}")

    gc.collect()
    gc.freeze()  # what existed before: as the worker freezes what it starts with
    tracked_before = len(gc.get_objects())
    rss_before = _resident_bytes()
    store = ChunkedStore({}, size_of=entry_chars)
    join = LabelJoin(store, horizon_seconds=72 * 3600, clock=lambda: 1_000_000.0)
    predicted = first  # as validate sends it
    cpu = 0.0
    for start in range(0, args.texts, BATCH):
        # a batch as validate sends it to <app>-texts-to-join, and as join_labels reads it
        texts = [
            {"id": f"ticket-{n:09d}", "reading": readings[n % len(readings)], "predicted": predicted}
            for n in range(start, min(start + BATCH, args.texts))
        ]
        message = orjson.dumps({"texts": texts})
        t0 = time.process_time()
        join.remember_message(start % 4, start // BATCH, orjson.loads(message)["texts"])
        store.flush()
        cpu += time.process_time() - t0
        print(f"\r  kept {start + len(texts):,}/{args.texts:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    memory = _resident_bytes() - rss_before
    tracked = len(gc.get_objects()) - tracked_before
    t0 = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - t0
    print(f"machine: {platform.machine()} {platform.python_implementation()} {platform.python_version()}")
    print(
        f"{args.texts:,} kept texts ({'real' if args.bodies else 'generated'}, "
        f"{sum(map(len, readings)) / len(readings):.0f} characters read a ticket): "
        f"{memory / args.texts:,.0f} bytes each (resident memory), {tracked / args.texts:.2f} tracked objects each, "
        f"a full collection {full * 1e3:,.0f} ms; decoded and kept in {1e6 * cpu / args.texts:.1f} us each"
    )


if __name__ == "__main__":
    main()
