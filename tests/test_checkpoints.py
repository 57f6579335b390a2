"""Checkpoints written from a forked child: the state as it was, one at a time, failures said."""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import pytest

from pipeline.runtime.checkpoints import CheckpointWriter, write_checkpoint
from pipeline.tagging.tagger import TicketTagger, load_tagger


class Slow:
    """Takes ``seconds`` to pickle: a checkpoint still being written."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self) -> tuple[type, tuple[float]]:
        time.sleep(self.seconds)
        return (Slow, (self.seconds,))


def test_a_checkpoint_holds_the_state_as_it_was_when_saved(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.runtime.checkpoints")
    tagger = TicketTagger(min_labels=1)
    tagger.learn_batch([{"id": "a", "subject": "Charged twice", "body": "refund my card", "case_type": "billing"}])
    path = tmp_path / "tagger-checkpoint.pickle"
    writer = CheckpointWriter(path, "tagger")
    assert writer.save({"tagger": tagger, "positions": {0: 1}}, version=tagger.version, positions={0: 1})
    # the worker goes on learning while the child writes
    tagger.learn_batch([{"id": "b", "subject": "App crashes", "body": "error on start", "case_type": "bug"}])
    writer.wait()
    restored = TicketTagger()
    assert load_tagger(restored, path) == {0: 1}
    assert restored.version == 1 and restored.learned["case_type"] == 1
    assert restored.predict_one({"subject": "refund", "body": "charged"})["case_type"]["label"] == "billing"
    assert f"tagger checkpoint={path} version=1 positions={{0: 1}}" in caplog.messages


def test_one_checkpoint_is_written_at_a_time(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path / "state.pickle", "test")
    assert writer.save({"slow": Slow(0.5), "n": 1})
    assert writer.busy()
    assert not writer.save({"n": 2})  # refused while the first is written: nothing done
    writer.wait()
    assert not writer.busy()
    assert pickle.loads((tmp_path / "state.pickle").read_bytes())["n"] == 1
    assert writer.save({"n": 3})
    writer.wait()
    assert pickle.loads((tmp_path / "state.pickle").read_bytes()) == {"n": 3}


def test_a_failed_or_stopped_checkpoint_is_logged_and_the_last_one_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.pickle"
    write_checkpoint({"n": 1}, path)
    # a checkpoint that cannot be pickled: the child fails
    writer = CheckpointWriter(path, "test")
    assert writer.save({"n": 2, "unpicklable": lambda: None})
    writer.wait()
    assert f"test checkpoint={path} failed exit=1: the last one written stays" in caplog.messages
    # one that takes longer than the writer waits: stopped
    writer = CheckpointWriter(path, "test", wait_seconds=0.2)
    started = time.monotonic()
    assert writer.save({"n": 3, "slow": Slow(30)})
    writer.wait()
    assert time.monotonic() - started < 10
    assert any(m.startswith(f"test checkpoint={path} child=") and "stopped after 0.2 s" in m for m in caplog.messages)
    assert not writer.busy()
    assert pickle.loads(path.read_bytes()) == {"n": 1}
