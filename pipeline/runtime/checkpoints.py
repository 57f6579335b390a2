"""The worker's checkpoints (the tagger's models, the pattern watches): written whole, off its event loop.

A checkpoint is a pickle written to a temporary file and renamed, so a worker killed
mid-write leaves the previous one whole. Pickling holds the interpreter for as long as
it takes: 0.63 s for the tagger's three models after 100,000 labelled tickets in ever
new words, and up to 0.74 s more for its record of labels learned at its cap
(docs/benchmarks.md), every 30 s, without a heartbeat, a fetch or a send meanwhile;
a thread would not help, since pickling these never lets go of the interpreter. So
:class:`CheckpointWriter` writes them from a child made by ``fork``, which sees the
state as it was at that moment (its memory is the worker's, copied only where the
worker writes afterwards), writes it and exits, while the worker goes on.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

__all__ = ["CheckpointWriter", "load_checkpoint", "write_checkpoint"]

logger = logging.getLogger(__name__)


def write_checkpoint(state: Any, path: Path) -> None:
    """Pickle ``state`` to ``path``: a temporary file, renamed once whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(state))
    os.replace(tmp, path)


#: Modules whose classes checkpoints written before the folders of pipeline/ name, and where
#: those classes live now: a worker upgraded in place loads its models and patterns.
RENAMED_MODULES = {
    "pipeline.tagger": "pipeline.tagging.tagger",
    "pipeline.labels": "pipeline.tagging.labels",
    "pipeline.patterns": "pipeline.patterns.grouper",
    "pipeline.pattern_watch": "pipeline.patterns.watch",
    "pipeline.volume": "pipeline.counting.volume",
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(RENAMED_MODULES.get(module, module), name)


def load_checkpoint(data: bytes) -> Any:
    """What :func:`write_checkpoint` wrote (``data``: the file's bytes), by this version's modules.

    Only for the worker's own files and models a user saved: pickle runs code.

    >>> import io
    >>> load_checkpoint(pickle.dumps({"positions": {0: 12}}))
    {'positions': {0: 12}}
    """
    return _Unpickler(io.BytesIO(data)).load()


def _default_signals() -> None:  # pragma: no cover - runs in the child
    try:
        signal.set_wakeup_fd(-1)
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, signal.SIG_DFL)
    except ValueError:  # forked from a thread other than the main one: it has none of its own
        pass


class CheckpointWriter:
    """Writes checkpoints from a forked copy of the process, one at a time.

    Parameters
    ----------
    path
        The checkpoint file.
    name
        What is saved, for the log line each finished checkpoint writes
        (``<name> checkpoint=<path> key=value ...``).
    wait_seconds
        How long :meth:`wait` waits for a child before it stops it (the previous
        checkpoint stays whole: the file is replaced only once written).

    Where ``fork`` is missing, a checkpoint is written in place.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "state.pickle"
    >>> writer = CheckpointWriter(path, "example")
    >>> state = {"count": 1}
    >>> writer.save(state, count=1)
    True
    >>> state["count"] = 2  # after the fork: the checkpoint holds the state as it was
    >>> writer.wait()
    >>> pickle.loads(path.read_bytes())
    {'count': 1}
    """

    def __init__(self, path: Path, name: str, wait_seconds: float = 60.0) -> None:
        self.path = path
        self.name = name
        self.wait_seconds = wait_seconds
        self.child: int | None = None
        self._described: dict[str, Any] = {}

    def save(self, state: Any, **described: Any) -> bool:
        """Start writing ``state`` as it is now; ``False`` (and nothing done) while the last one is being written.

        ``described``: what the log line says of this checkpoint once it is written.
        """
        if self.busy():
            return False
        if not hasattr(os, "fork"):
            write_checkpoint(state, self.path)
            self._log_written(described)
            return True
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (coverage is not collected from it)
            # No logging here: a lock another thread held at the fork stays held in the child.
            # The worker's signal handlers are not the child's: a stop signal sent to the
            # worker's process group ends the child (its file is not renamed), rather than
            # waking the worker's event loop through the descriptor they share.
            code = 1
            try:
                _default_signals()
                write_checkpoint(state, self.path)
                code = 0
            finally:
                os._exit(code)  # never back into the worker's code, whatever happened
        self.child, self._described = pid, described
        return True

    def busy(self) -> bool:
        """Whether a checkpoint is being written; a child that has ended is reaped, and its outcome logged."""
        if self.child is None:
            return False
        try:
            pid, status = os.waitpid(self.child, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: its outcome is unknown
            pid, status = self.child, -1
        if pid == 0:
            return True
        self._ended(status)
        return False

    def wait(self) -> None:
        """Wait for the checkpoint being written, if any (its child stopped after ``wait_seconds``)."""
        deadline = time.monotonic() + self.wait_seconds
        while self.busy():
            if time.monotonic() > deadline and self.child is not None:
                logger.error(
                    "%s checkpoint=%s child=%d stopped after %g s", self.name, self.path, self.child, self.wait_seconds
                )
                os.kill(self.child, signal.SIGKILL)
                self._ended(os.waitpid(self.child, 0)[1])
                return
            time.sleep(0.01)

    def _ended(self, status: int) -> None:
        code = os.waitstatus_to_exitcode(status) if status >= 0 else None
        if code == 0:
            self._log_written(self._described)
        else:
            logger.error("%s checkpoint=%s failed exit=%s: the last one written stays", self.name, self.path, code)
        self.child, self._described = None, {}

    def _log_written(self, described: dict[str, Any]) -> None:
        fields = "".join(f" {key}={value}" for key, value in described.items())
        logger.info("%s checkpoint=%s%s", self.name, self.path, fields)
