"""The ``ticketpulse`` command: ``worker``, ``produce``, ``detect``, ``replay``, ``import``, ``report``, ``demo``."""

from __future__ import annotations

import os

# Before numpy is first imported (OpenBLAS reads it once, when it loads): one BLAS thread.
# Grouping and tagging multiply a batch of vectors by the patterns' centroids or the
# tagger's weights, products far too small to share out; OpenBLAS's threads spun waiting
# for work, on the worker's 2 cores: 828 -> 157 us of CPU a CLINC query (tagged and
# grouped) with one thread (docs/benchmarks.md). The worker's parallelism is its
# processes (one per partition share), not BLAS threads. A value set by the operator wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import gc
import logging
import pickle
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from pipeline.tagging.choice import Tagger

__all__ = ["main"]


def _fail(message: str) -> int:
    print(f"ticketpulse: {message}", file=sys.stderr)
    return 2


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.review.report import parse_since, write_report

    settings = load_settings()
    try:
        until = parse_since(args.until, datetime.now(UTC)) if args.until else datetime.now(UTC)
        since = parse_since(args.since, until)
        data = write_report(settings, since, until, args.output)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    print(
        f"{args.output}: {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC, tickets={data.tickets_read} "
        f"areas={len(data.volume)} spikes={len(data.spikes)} patterns={len(data.patterns)} "
        f"near_churn={len(data.near_churn)} effects={len(data.effects)}"
    )
    return 0


def _parse_spike(text: str) -> object:
    from pipeline.testbed.generator import Spike

    try:
        area, start, hours, factor = text.split(",")
        moment = datetime.fromisoformat(start)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return Spike(area, moment, float(hours), float(factor))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--spike wants AREA,START,HOURS,FACTOR (e.g. reports,2026-01-06T10:00,2,4), got {text!r}"
        ) from None


def _cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.outputs.sinks import SinkError, create_sink
    from pipeline.runtime.kafka import BrokerError, ensure_topics
    from pipeline.runtime.liveness import StopDeadline
    from pipeline.worker import build_pipeline

    settings = load_settings()
    tune_gc()  # before the checkpoint is loaded too: millions of objects at once
    try:
        loaded_tagger = _load_tagger_files(settings)
    except (OSError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        return _fail(str(exc))
    try:
        ensure_topics(settings)
        sink = create_sink(settings)
        asyncio.run(_check_sink(sink))
    except (BrokerError, SinkError, ValueError) as exc:
        return _fail(str(exc))
    pipeline = build_pipeline(settings, sink=create_sink(settings), loaded_tagger=loaded_tagger)
    worker = service_worker(pipeline.app, settings.log_level)
    # a stop (SIGTERM) that hangs, as one waiting on a lost broker, ends the process
    StopDeadline(lambda: bool(worker.should_stop), settings.stop_wait_seconds + 10).start()
    worker.execute_from_commandline()
    return 0


def _load_tagger_files(settings: Settings) -> tuple[Tagger, dict[int, int]] | None:
    """The tagger's checkpoint (or warm-start model) and its training positions, loaded before the worker starts.

    A file the worker could not use (other feature buckets, not a model) is refused here,
    with the reason, rather than once the agents run, where it would leave the worker
    running without models. The worker goes on from what is loaded here.
    """
    from pipeline.tagging.choice import load_any_tagger, new_tagger, tagger_checkpoint

    if not settings.tagging_enabled:
        return None
    tagger = new_tagger(settings)
    positions = load_any_tagger(tagger, tagger_checkpoint(settings), settings.tagger_model)
    return tagger, positions


#: The worker's garbage-collector thresholds (Python's default: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect cycles less often: the worker keeps hours of state (ticket words for late
    tags, patterns, tables) that every full collection walks again, and its batches
    allocate many short-lived dicts that set collections off. With Python's default
    thresholds the collector took about a third of the worker: 2,586 messages/s end
    to end, 3,645 with these (docs/benchmarks.md). The state is dicts, lists and strings
    freed by reference counting; cycles are still collected, only less often.

    What exists when the worker starts (modules, River, Faust, the app) lives as long
    as the process: frozen, full collections no longer walk it (3,410-3,469 -> 3,587-3,781
    messages/s)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def service_worker(app: Any, log_level: str) -> Any:
    """A Faust worker that logs at ``log_level`` and draws no terminal spinner.

    Faust's spinner, drawn unless the level is below WARNING, sets the root logger to
    DEBUG so that it turns on every record: at ``TICKETPULSE_LOG_LEVEL=warning`` every
    message sent then built a debug record that nobody printed (about 5 % of the worker).
    """
    import faust

    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True)
    worker.spinner = None
    return worker


async def _check_sink(sink: object) -> None:
    await sink.setup()  # type: ignore[attr-defined]
    await sink.close()  # type: ignore[attr-defined]


def _cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.ingest.produce import produce, read_tickets
    from pipeline.runtime.kafka import BrokerError, ensure_topics
    from pipeline.testbed.generator import TicketGenerator

    settings = load_settings()
    try:
        ensure_topics(settings)
    except BrokerError as exc:
        return _fail(str(exc))
    if args.file:
        path = Path(args.file)
        if not path.exists():
            return _fail(f"no such file: {path}")
        messages = read_tickets(path)
        total = None
    else:
        gen = TicketGenerator(
            datetime.fromisoformat(args.start).replace(tzinfo=UTC),
            days=args.days,
            seed=args.seed,
            scale=args.scale,
            spikes=args.spike or (),
            customers=args.customers,
        )
        generated = list(gen.tickets())
        messages = ((n, orjson.dumps(t.payload)) for n, t in enumerate(generated, 1))
        total = len(generated)
    try:
        summary = produce(settings, messages, total=total, progress=not args.quiet)
    except BrokerError as exc:
        return _fail(str(exc))
    for reason in summary.reasons[:20]:
        print(f"rejected {reason}", file=sys.stderr)
    print(summary.line())
    return 0 if summary.rejected == summary.failed == 0 else 1


def _cmd_detect(args: argparse.Namespace) -> int:
    from pipeline.commands.detect import DetectError, detect_file

    source = Path(args.input)
    if not source.exists():
        return _fail(f"no such file: {source}")
    if not 0.0 < args.threshold <= 1.0:
        return _fail(f"--threshold must be in (0, 1], as scores are; got {args.threshold:g}")
    try:
        summary = detect_file(
            source,
            Path(args.output),
            threshold=args.threshold,
            plot=Path(args.plot) if args.plot else None,
            progress=not args.quiet,
        )
    except DetectError as exc:
        return _fail(str(exc))
    if summary["warning"]:
        print(f"warning: {summary['warning']}", file=sys.stderr)
    print(orjson.dumps({**summary, "output": args.output}).decode())
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from pipeline.commands.replay import replay

    source = Path(args.input)
    if not source.exists():
        return _fail(f"no such file: {source}")
    settings = load_settings()
    summary = replay(
        source,
        Path(args.output),
        Path(args.save_model) if args.save_model else None,
        progress=not args.quiet,
        feature_buckets=settings.tagger_feature_buckets,
        pattern_threshold=settings.pattern_threshold,
        tagger_kind=settings.tagger,
        pattern_by_locale=settings.pattern_by_locale,
    )
    print(orjson.dumps(summary).decode())
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    import tempfile

    from pipeline.commands.replay import replay
    from pipeline.ingest.importer import ImportError_, read_export
    from pipeline.ingest.produce import produce
    from pipeline.runtime.kafka import BrokerError, ensure_topics

    path = Path(args.file)
    if not path.exists():
        return _fail(f"no such file: {path}")
    mapping = _mapping(args.map)
    if isinstance(mapping, str):
        return _fail(mapping)
    good: list[tuple[int, bytes]] = []
    rejected: list[str] = []
    try:
        for line, record in read_export(path, args.format, mapping):
            if isinstance(record, bytes):
                good.append((line, record))
            else:
                rejected.append(f"line {line}: {record}")
    except (ImportError_, ValueError) as exc:
        return _fail(f"{path}: {exc}")
    if args.replay:
        if not args.output:
            return _fail("--replay needs --output PREDICTIONS.jsonl")
        with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
            fh.write(b"".join(raw + b"\n" for _, raw in good))
        save = Path(args.save_model) if args.save_model else None
        summary = replay(
            Path(fh.name),
            Path(args.output),
            save,
            progress=not args.quiet,
            feature_buckets=load_settings().tagger_feature_buckets,
            pattern_threshold=load_settings().pattern_threshold,
            tagger_kind=load_settings().tagger,
            pattern_by_locale=load_settings().pattern_by_locale,
        )
        Path(fh.name).unlink()
        summary["rejected"] += len(rejected)
        for reason in rejected[:50]:
            print(f"rejected {reason}", file=sys.stderr)
        print(orjson.dumps(summary).decode())
        return 0
    settings = load_settings()
    try:
        ensure_topics(settings)
        result = produce(settings, good, total=len(good), progress=not args.quiet)
    except BrokerError as exc:
        return _fail(str(exc))
    result.rejected += len(rejected)
    for reason in (rejected + result.reasons)[:50]:
        print(f"rejected {reason}", file=sys.stderr)
    print(result.line())
    return 0 if result.rejected == result.failed == 0 else 1


def _mapping(items: list[str] | None) -> dict[str, str] | str:
    """``--map column=field`` options as a dict, or what is wrong with one."""
    mapping = {}
    for item in items or []:
        column, sep, field = item.partition("=")
        if not sep or not column or not field:
            return f"--map wants column=field, got {item!r}"
        mapping[column] = field
    return mapping


def _read_events(path: str | None) -> list[dict[str, Any]] | str:
    """Product events from a JSONL file (``--events``), or what is wrong with the file."""
    from pipeline.ingest.schema import TicketError, parse_product_event

    if path is None:
        return []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        return f"{path}: {exc}"
    events = []
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            try:
                events.append(parse_product_event(raw))
            except TicketError as exc:
                return f"{path} line {number}: {exc}"
    return events


def _cmd_backtest(args: argparse.Namespace) -> int:
    from pipeline.ingest.importer import ImportError_, read_export
    from pipeline.review.backtest import backtest
    from pipeline.review.render import render
    from pipeline.review.report import parse_since

    path = Path(args.export)
    if not path.exists():
        return _fail(f"no such file: {path}")
    mapping, events = _mapping(args.map), _read_events(args.events)
    if isinstance(mapping, str) or isinstance(events, str):
        return _fail(str(mapping if isinstance(mapping, str) else events))
    settings = load_settings()
    try:
        now = datetime.now(UTC)
        until = parse_since(args.until, now).timestamp() if args.until else None
        since = parse_since(args.since, now).timestamp() if args.since else None
        data, summary = backtest(
            read_export(path, args.format, mapping), settings, events, since, until, progress=not args.quiet
        )
        Path(args.output).write_text(render(data), encoding="utf-8")
    except (ImportError_, ValueError, OSError) as exc:
        return _fail(f"{path}: {exc}")
    for line, reason in data.rejected[:50]:
        print(f"rejected line {line}: {reason}", file=sys.stderr)
    print(orjson.dumps(summary).decode())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.commands.demo import run_demo

    export = Path(args.input) if args.input else None
    if export is not None and not export.exists():
        return _fail(f"no such file: {export}")
    return run_demo(
        days=args.days, scale=args.scale, seed=args.seed, export=export, export_format=args.format, speedup=args.speedup
    )


def main(argv: list[str] | None = None) -> int:
    from detectors.surprise import DETECTION_SCORE  # numpy, which every command but --help loads anyway

    parser = argparse.ArgumentParser(prog="ticketpulse", description="Support tickets in, product intelligence out.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run the Faust worker (settings from TICKETPULSE_* variables)")
    p = sub.add_parser("produce", help="send tickets to Kafka from a JSONL/CSV file or the generator")
    p.add_argument("file", nargs="?", help="JSONL or CSV file; without it, generated tickets")
    p.add_argument("--days", type=float, default=3.0, help="generated days (default 3)")
    p.add_argument("--start", default="2026-01-05T00:00:00", help="first generated moment, UTC")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every area's volume")
    p.add_argument("--customers", type=int, default=20000, help="customers in the generated helpdesk")
    p.add_argument("--spike", type=_parse_spike, action="append", help="AREA,START,HOURS,FACTOR (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    t = sub.add_parser("detect", help="score a timestamp,value CSV row by row (NAB result format)")
    t.add_argument("input", help="CSV with columns timestamp,value")
    t.add_argument("--output", required=True, help="CSV to write: timestamp,value,anomaly_score")
    t.add_argument(
        "--threshold",
        type=float,
        default=DETECTION_SCORE,
        help=f"score from which a row counts as a detection (default {DETECTION_SCORE:g}: NAB's standard profile)",
    )
    t.add_argument("--plot", help="PNG to draw: the series, its scores, the detections")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    r = sub.add_parser("replay", help="the tagger over a JSONL history: predict, then learn, per ticket")
    r.add_argument("input", help="JSONL tickets, in the order they happened")
    r.add_argument("--output", required=True, help="JSONL predictions, one line per input line")
    r.add_argument("--save-model", help="write the trained tagger here (pickle) for a warm start")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    i = sub.add_parser("import", help="a helpdesk's export into the tickets topic (or into replay)")
    i.add_argument("file", help="the export: Zendesk JSON, Freshdesk CSV, a CSV or JSONL in the ticket schema")
    i.add_argument("--format", required=True, choices=["zendesk", "freshdesk", "csv", "jsonl"])
    i.add_argument("--map", action="append", help="column=field: a CSV column is this ticket field (repeatable)")
    i.add_argument("--replay", action="store_true", help="feed the tickets to the tagger replay, not to Kafka")
    i.add_argument("--output", help="with --replay: where the predictions go")
    i.add_argument("--save-model", help="with --replay: write the trained tagger here, for a warm start")
    i.add_argument("--quiet", action="store_true", help="no progress bar")
    o = sub.add_parser("report", help="the monthly review: one self-contained HTML file")
    o.add_argument("--since", default="30d", help="30d, 12h, 2w before --until, or a date (default 30d)")
    o.add_argument("--until", help="end of the period, ISO date-time (default now)")
    o.add_argument("--output", required=True, help="the HTML file to write")
    b = sub.add_parser("backtest", help="your own export through the worker's code, offline: one HTML review")
    b.add_argument("export", help="the export: JSONL or CSV in the ticket schema, Zendesk JSON, Freshdesk CSV")
    b.add_argument("--output", required=True, help="the HTML review to write")
    b.add_argument("--format", default="jsonl", choices=["zendesk", "freshdesk", "csv", "jsonl"])
    b.add_argument("--map", action="append", help="column=field: a CSV column is this ticket field (repeatable)")
    b.add_argument("--events", help="JSONL of product events (releases, fixes) whose effect to measure")
    b.add_argument("--since", help="first moment the review shows (a date, or 30d before now); default: the first")
    b.add_argument("--until", help="end of the review (a date); default: the last ticket")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    d = sub.add_parser("demo", help="embedded broker and InfluxDB, a worker, and generated days with a spike")
    d.add_argument("--days", type=float, default=4.0, help="simulated days (default 4)")
    d.add_argument("--scale", type=float, default=20.0, help="volume multiplier (default 20)")
    d.add_argument("--seed", type=int, default=1, help="generator seed")
    d.add_argument("--input", help="play your own export instead of generated days (see --format)")
    d.add_argument("--format", default="jsonl", choices=["zendesk", "freshdesk", "csv", "jsonl"], help="of --input")
    d.add_argument(
        "--speedup", type=float, help="play --input this many times faster than it happened (default: at once)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.command == "demo" else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    handlers = {
        "worker": _cmd_worker,
        "produce": _cmd_produce,
        "detect": _cmd_detect,
        "replay": _cmd_replay,
        "import": _cmd_import,
        "demo": _cmd_demo,
        "report": _cmd_report,
        "backtest": _cmd_backtest,
    }
    try:
        return handlers[args.command](args)
    except SettingsError as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
