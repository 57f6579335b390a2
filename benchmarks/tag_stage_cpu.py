"""CPU of the worker's tag stage (``tag_tickets``) and learn stage (``learn_batch``), per tagger, on SUMO.

    PYTHONPATH=. .venv/bin/python benchmarks/tag_stage_cpu.py ../shared/data [--questions 6000]

Batches of 500 questions as the worker takes them: tagged, then their labels learned (every
worker learns every label). The first 1,000 are a warm-up; CPU is ``time.process_time``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import time
from pathlib import Path

from pipeline.ingest.schema import parse_ticket
from pipeline.settings import Settings
from pipeline.tagging.choice import new_tagger
from pipeline.tagging.tag import tag_tickets
from pipeline.topology import training_topic

WARM_UP = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the shared data folder (holds sumo/)")
    parser.add_argument("--questions", type=int, default=6000)
    args = parser.parse_args()
    with gzip.open(args.data / "sumo" / "questions-2022-2026.jsonl.gz", "rb") as fh:
        tickets = [parse_ticket(line.rstrip()) for line in itertools.islice(fh, args.questions)]
    for kind in ("words", "linear"):
        settings = Settings(tagger=kind)
        tagger = new_tagger(settings)
        tag_s = learn_s = 0.0
        for start in range(0, len(tickets), 500):
            t0 = time.process_time()
            tagged = tag_tickets(tagger, tickets[start : start + 500], settings.partitions, training_topic(settings)[1])
            t1 = time.process_time()
            tagger.learn_batch([e for part in tagged.labelled.values() for e in part])
            t2 = time.process_time()
            if start >= WARM_UP:
                tag_s, learn_s = tag_s + t1 - t0, learn_s + t2 - t1
        measured = len(tickets) - WARM_UP
        print(
            f"{kind}: tag stage {1e6 * tag_s / measured:.0f} us/ticket, "
            f"learning {1e6 * learn_s / measured:.0f} us/label "
            f"({measured} questions); product_area of the last 1,000: {tagger.quality['product_area'].summary()}"
        )


if __name__ == "__main__":
    main()
