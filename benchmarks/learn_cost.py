"""What a label costs a worker that did not tag its ticket (every worker learns every label).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/learn_cost.py ../shared/data/sumo/questions-2022-2026.jsonl.gz \
        [--limit 6000] [--message 500] [--repeat 3]

The first ``--limit`` tickets are tagged as the worker's tag stage tags them (batches of
500, :func:`pipeline.tagging.tag.tag_tickets`), and their training examples encoded as the
training topic carries them (:class:`pipeline.messages.TrainingBatch`, with the token ids
of each reading), ``--message`` examples a message: a worker under load tags batches of
hundreds, one under a light load a few tickets at a time, and the learner's costs a call
(building and stacking the batch's matrices) are spread over as many labels. A second
tagger, which never saw the tickets (the other worker), then reads those messages as
:class:`pipeline.tagging.learn.LearnLabels` does: decodes them and learns their labels
(scored, embedded from the carried ids, hashed into n-grams, learned in steps of 16).
Printed: CPU microseconds a label, in all and by part, the best of ``--repeat`` runs (a
fresh learner each). In-process: no Kafka.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the ticketpulse command sets it

from stage_cost import StageClock  # this script's neighbour (benchmarks/)

import pipeline.tagging.linear as linear
from pipeline.ingest.schema import parse_ticket
from pipeline.messages import Codec, TrainingBatch, encode
from pipeline.settings import load_settings
from pipeline.tagging.choice import new_tagger
from pipeline.tagging.tag import tag_tickets


def training_messages(path: Path, limit: int, size: int) -> list[bytes]:
    """The training topic's messages for the first ``limit`` tickets of an export."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        lines = [line for _, line in zip(range(limit), fh, strict=False)]
    tickets = [parse_ticket(line) for line in lines]
    settings = load_settings()
    tagging = new_tagger(settings)
    messages = []
    for start in range(0, len(tickets), 500):
        tagged = tag_tickets(tagging, tickets[start : start + 500], settings.partitions, 1)
        examples = [e for batch in tagged.labelled.values() for e in batch]
        messages += [encode(TrainingBatch(examples[at : at + size])) for at in range(0, len(examples), size)]
        tagging.learn_batch(examples)
    return messages


def learn_once(messages: list[bytes]) -> tuple[int, dict[str, float]]:
    """Labels learned and CPU seconds by part (exclusive) of a fresh tagger reading ``messages``."""
    clock = StageClock()
    learner = new_tagger(load_settings())
    assert isinstance(learner, linear.LinearTagger), "the linear tagger (TICKETPULSE_TAGGER=linear)"
    learner.features = clock.wrap("features (embedding the carried ids, n-grams)", learner.features)  # type: ignore[method-assign]
    learner._learn_rows = clock.wrap("gradient steps", learner._learn_rows)  # type: ignore[method-assign]
    learn_batch = clock.wrap("the rest (which labels are new, scoring them)", learner.learn_batch)
    decode = clock.wrap("decoding the message", Codec(TrainingBatch).decode)
    learned = 0
    start = time.process_time()
    for raw in messages:
        learned += learn_batch(decode(raw).examples)
    return learned, {**clock.seconds, "all": time.process_time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="JSON lines (gzipped or not) in the ticket schema, with labels")
    parser.add_argument("--limit", type=int, default=6000)
    parser.add_argument("--message", type=int, default=500, help="examples a training message")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    messages = training_messages(args.export, args.limit, args.message)
    runs = [learn_once(messages) for _ in range(args.repeat)]
    learned, seconds = min(runs, key=lambda run: run[1]["all"])
    size = sum(map(len, messages)) / max(learned, 1)
    print(
        f"{learned} labels, {size:.0f} bytes a label on the training topic, {args.message} a message;"
        f" CPU us a label (best of {args.repeat}):"
    )
    for name, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {value / max(learned, 1) * 1e6:.1f}")
    print(json.dumps({"labels": learned, **{k: round(v / max(learned, 1) * 1e6, 2) for k, v in seconds.items()}}))


if __name__ == "__main__":
    main()
