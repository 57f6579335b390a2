"""Which tagger runs (``TICKETPULSE_TAGGER``), where its checkpoint lives, and how it is saved and loaded.

Two taggers have the same contract (``predict_binned``, ``learn_batch``, ``process_many``,
``knows``, ``quality``, ``learned``, ``version``, ``corrections``):

- ``linear`` (the default): :class:`pipeline.tagging.linear.LinearTagger`, a softmax over
  the ticket's embedding and hashed token pairs (CLINC150 test accuracy 0.927 against
  0.860, SUMO topic 0.422 against 0.354: docs/benchmarks.md). Its weights depend on the
  order of the labels, so every worker reads them in one order: its training topic
  (``<app>-tagger-training-ordered``) has one partition. Its checkpoint names the
  embedding model it learned on; one of another model is refused.
- ``words``: :class:`pipeline.tagging.tagger.TicketTagger`, naive Bayes over hashed words
  (counts: any order), on ``<app>-tagger-training`` with ``TICKETPULSE_PARTITIONS``
  partitions, as before the linear tagger.

Each has its own checkpoint file and training topic, so switching one way and back resumes
each from where it was; every worker of an app must run the same one (a worker learns from
the topic of its own tagger only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.runtime.checkpoints import load_checkpoint, write_checkpoint
from pipeline.settings import Settings
from pipeline.tagging.linear import LinearTagger
from pipeline.tagging.tagger import FEATURE_BUCKETS, TicketTagger, load_tagger, save_tagger
from pipeline.text.embedding import shared_encoder

__all__ = [
    "Tagger",
    "load_any_tagger",
    "make_tagger",
    "new_tagger",
    "save_any_tagger",
    "tagger_checkpoint",
    "tagger_state",
]

#: Either tagger: the worker, the backtest and the replay use what both have.
Tagger = TicketTagger | LinearTagger

logger = logging.getLogger(__name__)


def new_tagger(settings: Settings) -> Tagger:
    """An empty tagger of the kind ``TICKETPULSE_TAGGER`` names."""
    return make_tagger(settings.tagger, settings.tagger_feature_buckets, (settings.label_horizon_hours + 24) * 3600)


def make_tagger(
    kind: str, feature_buckets: int | None = FEATURE_BUCKETS, remember_seconds: float | None = None
) -> Tagger:
    """An empty tagger: ``"linear"`` (remembering a ticket's labels ``remember_seconds``), or
    ``"words"`` with its ``feature_buckets``."""
    if kind == "linear":
        return LinearTagger(shared_encoder(), remember_seconds=remember_seconds)
    if kind == "words":
        return TicketTagger(feature_buckets=feature_buckets)
    raise ValueError(f"no tagger {kind!r} (TICKETPULSE_TAGGER): 'linear' or 'words'")


def tagger_checkpoint(settings: Settings) -> Path:
    """Where the worker saves its models, with the training positions they include (one file per tagger kind)."""
    name = "linear-tagger-checkpoint.pickle" if settings.tagger == "linear" else "tagger-checkpoint.pickle"
    return Path(settings.data_dir) / name


def tagger_state(tagger: Tagger, positions: Mapping[int, int]) -> dict[str, Any]:
    """What a checkpoint holds: the models, the training positions, and (linear) the embedding model's name."""
    state: dict[str, Any] = {"tagger": tagger, "positions": dict(positions)}
    if isinstance(tagger, LinearTagger):
        state["embedding_model"] = tagger.model_id
    return state


def save_any_tagger(tagger: Tagger, positions: Mapping[int, int], path: Path) -> None:
    """Write a checkpoint of either tagger (:func:`tagger_state`), whole or not at all."""
    if isinstance(tagger, TicketTagger):
        save_tagger(tagger, positions, path)
        return
    write_checkpoint(tagger_state(tagger, positions), path)
    logger.info(
        "tagger checkpoint=%s version=%d positions=%s embedding_model=%s",
        path,
        tagger.version,
        dict(positions),
        tagger.model_id,
    )


def load_any_tagger(tagger: Tagger, checkpoint: Path, warm_start: str | None = None) -> dict[int, int]:
    """Load the checkpoint into ``tagger`` (else the warm-start model); the training positions to resume from.

    As :func:`pipeline.tagging.tagger.load_tagger` for naive Bayes. A linear tagger refuses
    a file of the other kind, or learned on another embedding model's vectors, naming
    what it found.
    """
    if isinstance(tagger, TicketTagger):
        return load_tagger(tagger, checkpoint, warm_start)
    if checkpoint.exists():
        state = load_checkpoint(checkpoint.read_bytes())
        loaded = state.get("tagger") if isinstance(state, dict) else None
        if not isinstance(loaded, LinearTagger):
            raise TypeError(f"{checkpoint} is not a checkpoint of the linear tagger: remove it to learn anew")
        tagger.restore(loaded, f"the checkpoint {checkpoint}")
        logger.info(
            "tagger loaded=checkpoint embedding_model=%s path=%s version=%d",
            tagger.model_id,
            checkpoint,
            tagger.version,
        )
        return {int(p): int(o) for p, o in state["positions"].items()}
    if warm_start:
        loaded = load_checkpoint(Path(warm_start).read_bytes())
        if not isinstance(loaded, LinearTagger):
            kind = "a naive Bayes model (TICKETPULSE_TAGGER=words)" if isinstance(loaded, TicketTagger) else "no model"
            raise TypeError(
                f"{warm_start} (TICKETPULSE_TAGGER_MODEL) is {kind}, but this worker runs the linear tagger: save "
                "one with `TICKETPULSE_TAGGER=linear ticketpulse replay --save-model`"
            )
        tagger.restore(loaded, f"the warm-start model {warm_start}")
        logger.info("tagger loaded=warm-start path=%s version=%d", warm_start, tagger.version)
    return {}
