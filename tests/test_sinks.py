"""The InfluxDB writers against real servers: influxd (1.x) and VictoriaMetrics (2.x write API)."""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request

import orjson
import pytest

from pipeline.outputs.lineprotocol import Point
from pipeline.outputs.sinks import REFUSED_LINES_PER_WRITE, FileSink, InfluxV1Sink, InfluxV2Sink, SinkError

from .conftest import influx_query

pytestmark = pytest.mark.integration

POINTS = [
    Point(
        "ticket_volume",
        {"area": "billing", "case_type": "all", "severity": "all", "window": "1h"},
        {"tickets": 12, "customers": 9},
        1767600000,
    ),
    Point(
        "ticket_volume",
        {"area": "log in", "case_type": "all", "severity": "all", "window": "1h"},
        {"tickets": 3, "customers": 3},
        1767603600,
    ),
]


def test_v1_sink_writes_and_a_rewrite_replaces_the_point(influx) -> None:
    async def go() -> None:
        sink = InfluxV1Sink(influx.url, "sinktest")
        await sink.write(POINTS)
        await sink.write(
            [Point(POINTS[0].measurement, POINTS[0].tags, {"tickets": 13, "customers": 9}, POINTS[0].time)]
        )
        await sink.close()
        assert sink.points_written == 3

    asyncio.run(go())
    series = influx_query(influx.url, "sinktest", "SELECT tickets, customers FROM ticket_volume GROUP BY area")
    assert {s["tags"]["area"]: s["values"] for s in series} == {
        "billing": [[1767600000, 13, 9]],
        "log in": [[1767603600, 3, 3]],
    }


def test_v2_sink_writes_through_influxdb_client_and_points_read_back(victoria) -> None:
    async def go() -> None:
        sink = InfluxV2Sink(victoria.url, token="test-token", org="acme", bucket="tickets")
        await sink.write(POINTS)
        await sink.close()

    asyncio.run(go())
    urllib.request.urlopen(f"{victoria.url}/internal/force_flush", timeout=10).read()
    params = urllib.parse.urlencode({"match[]": '{__name__=~"ticket_volume_.*"}'})
    with urllib.request.urlopen(f"{victoria.url}/api/v1/export?{params}", timeout=10) as resp:
        rows = [orjson.loads(line) for line in resp.read().splitlines()]
    got = {(r["metric"]["__name__"], r["metric"]["area"]): (r["values"], r["timestamps"]) for r in rows}
    assert got == {
        ("ticket_volume_tickets", "billing"): ([12], [1767600000000]),
        ("ticket_volume_customers", "billing"): ([9], [1767600000000]),
        ("ticket_volume_tickets", "log in"): ([3], [1767603600000]),
        ("ticket_volume_customers", "log in"): ([3], [1767603600000]),
    }
    assert all(r["metric"]["case_type"] == "all" and r["metric"]["window"] == "1h" for r in rows)


#: Tag values line protocol must escape (issue #29, item 4): each an area a helpdesk could send.
TRICKY_TAGS = [
    "ends in a backslash\\",
    "two trailing\\\\",
    "c:\\share\\reports",
    "double\\\\inside",
    "back\\,comma",
    "back\\ space",
    "back\\=equals",
    "a,b",
    "log in",
    " leading space",
    ",leading comma",
    "=leading equals",
    "a=b",
    'say "hi"',
    "it's",
    "été 日本 🙂",
    "line\nbreak",
    "x" * 990_000,
]


T0 = 1767600000  # VictoriaMetrics reads a time of 0 as "now"


def _tricky_points() -> list[Point]:
    return [Point("tricky", {"area": v, "window": "1h"}, {"tickets": n}, T0 + n) for n, v in enumerate(TRICKY_TAGS)]


def _as_stored(value: str, flavour: str) -> str:
    """What each server holds for a tag value: the value itself, but for the documented changes
    (pipeline/outputs/lineprotocol.py): a line break as the two characters '\\n', and for
    InfluxDB (no way to write it) a last backslash as the full-width one."""
    value = value.replace("\n", "\\n")
    if flavour == "influxdb" and value.endswith("\\"):
        value = value[:-1] + "\uff3c"
    return value


def _check_read_back(got: dict[str, object], flavour: str, value_of: object) -> None:
    """Every tricky value but the long one read back as :func:`_as_stored` says; the long one
    (the last) as one series of its first 242 characters, ``~#`` and a hash, 256 in all."""
    (long_area,) = [area for area in got if len(area) > 200]
    assert len(long_area) == 256 and long_area.startswith("x" * 242 + "~#")
    assert got.pop(long_area) == value_of(len(TRICKY_TAGS) - 1)
    assert got == {_as_stored(v, flavour): value_of(n) for n, v in enumerate(TRICKY_TAGS[:-1])}


def test_v1_sink_writes_every_tag_value_and_influxdb_reads_each_back(influx) -> None:
    """Backslashes (a value ending in one, two in a row, one before a comma), commas, spaces,
    equals signs, quotes, non-ASCII, a line break and a 990,000-character value: every point
    lands in influxd 1.6.7 and reads back as written. (Before: the trailing backslash was
    written '\\\\', refused as 'invalid tag format'; two backslashes read back as four.)"""

    async def go() -> InfluxV1Sink:
        sink = InfluxV1Sink(influx.url, "tricky")
        try:
            await sink.write(_tricky_points())
        finally:
            await sink.close()
        return sink

    sink = asyncio.run(go())
    assert sink.points_refused == 0
    series = influx_query(influx.url, "tricky", "SELECT tickets FROM tricky GROUP BY area")
    got = {s["tags"]["area"]: s["values"] for s in series}
    assert TRICKY_TAGS[2] in got and TRICKY_TAGS[3] in got  # backslashes inside: exact
    _check_read_back(got, "influxdb", lambda n: [[T0 + n, n]])


def test_v2_sink_writes_every_tag_value_and_victoriametrics_reads_each_back_exactly(victoria) -> None:
    """The same values through the 2.x write API into VictoriaMetrics (which reads two
    backslashes as one): with ``flavour="victoriametrics"`` every one reads back exactly, a
    trailing backslash included. (Before: no flavour; two backslashes read back as one.)"""

    async def go() -> None:
        sink = InfluxV2Sink(victoria.url, token="t", org="acme", bucket="tricky", flavour="victoriametrics")
        try:
            await sink.write(_tricky_points())
        finally:
            await sink.close()

    asyncio.run(go())
    urllib.request.urlopen(f"{victoria.url}/internal/force_flush", timeout=10).read()
    params = urllib.parse.urlencode({"match[]": '{__name__="tricky_tickets"}'})
    with urllib.request.urlopen(f"{victoria.url}/api/v1/export?{params}", timeout=10) as resp:
        rows = [orjson.loads(line) for line in resp.read().splitlines()]
    got = {r["metric"]["area"]: (r["values"], r["timestamps"]) for r in rows}
    assert TRICKY_TAGS[0] in got and TRICKY_TAGS[3] in got  # exact: trailing and doubled backslashes
    _check_read_back(got, "victoriametrics", lambda n: ([n], [(T0 + n) * 1000]))


def _error_lines_of_writes(caplog, sink: InfluxV1Sink, *writes: list[Point]) -> list[str]:
    """Write each list of points in turn with ``sink``, then close it; the error lines it logged."""

    async def go() -> None:
        try:
            for points in writes:
                await sink.write(points)
        finally:
            await sink.close()

    with caplog.at_level("ERROR", logger="pipeline.outputs.sinks"):
        asyncio.run(go())
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_v1_sink_stores_the_good_points_and_names_each_one_influxdb_refuses(influx, caplog) -> None:
    """A field of another type than its series has: InfluxDB refuses that point (400,
    "field type conflict"). The others of the write are stored; the refused one is logged
    with its line and counted, and the stream goes on."""
    points = [Point("m", {"k": str(n)}, {"v": n}, n) for n in range(8)]
    points[5] = Point("m", {"k": "5"}, {"v": "text"}, 5)
    sink = InfluxV1Sink(influx.url, "conflict")
    # the first point alone first: the series' field is an integer
    (record,) = _error_lines_of_writes(caplog, sink, points[:1], points)
    assert sink.points_refused == 1 and sink.points_written == 8  # the first one twice, and 7 of the 8
    assert record.startswith('sink=influx_v1 point_refused=m,k=5 v="text" 5 error=')
    assert "InfluxDB rejected the write (HTTP 400)" in record
    assert "field type conflict" in record
    series = influx_query(influx.url, "conflict", "SELECT v FROM m")
    assert [row[1] for row in series[0]["values"]] == [0, 1, 2, 3, 4, 6, 7]


def test_points_influxdb_refuses_together_cost_one_request_and_one_log_line(influx, caplog) -> None:
    """A series whose field changed type refuses every point written to it: a run of
    refused points is one request and one log line (with how many, and the first), not
    halved down to each point; the good points of the same write are stored."""
    good = [Point("m", {"k": str(n)}, {"v": n}, n) for n in range(1000)]
    bad = [Point("m", {"k": str(n)}, {"v": f"text {n}"}, n) for n in range(1000, 2000)]
    requests: list[int] = []

    class CountingSink(InfluxV1Sink):
        async def _write(self, body: bytes) -> None:
            requests.append(body.count(b"\n") + 1)
            await super()._write(body)

    sink = CountingSink(influx.url, "conflicts")
    # the series' field an integer; then every point refused; then half of them
    errors = _error_lines_of_writes(caplog, sink, good[:1], bad, good + bad)
    assert sink.points_refused == 2000
    # after the first point's write (again once the database is made): the refused write
    # once, the half-refused one, then each half once
    assert set(requests[:-4]) == {1} and requests[-4:] == [1000, 2000, 1000, 1000]
    assert len(errors) == 2
    for line in errors:
        assert line.startswith('sink=influx_v1 points_refused=1000 first=m,k=1000 v="text 1000" 1000 error=')
        assert "field type conflict" in line and "dropped=1000" in line
    series = influx_query(influx.url, "conflicts", "SELECT count(v) FROM m")
    assert series[0]["values"][0][1] == 1000


def test_refused_points_among_good_ones_log_a_few_lines_then_how_many_more(influx, caplog) -> None:
    """Every fourth point refused, among good ones: each found and counted, the good ones
    stored, but a write logs REFUSED_LINES_PER_WRITE lines and then one with how many more."""
    points = [Point("m", {"k": str(n)}, {"v": n if n % 4 else f"text {n}"}, n) for n in range(400)]

    sink = InfluxV1Sink(influx.url, "scattered")
    # the series' field an integer first
    errors = _error_lines_of_writes(caplog, sink, [Point("m", {"k": "1"}, {"v": 1}, 1)], points)
    assert sink.points_refused == 100
    assert len(errors) == REFUSED_LINES_PER_WRITE + 1
    assert errors[0].startswith('sink=influx_v1 point_refused=m,k=0 v="text 0" 0 error=')
    assert errors[-1] == f"sink=influx_v1 points_refused_not_logged=90 lines_logged={REFUSED_LINES_PER_WRITE}"
    series = influx_query(influx.url, "scattered", "SELECT count(v) FROM m")
    assert series[0]["values"][0][1] == 300


def test_v1_sink_retries_until_influxdb_comes_back_and_creates_the_database(free_port_influx) -> None:
    """A write to a server that is not up yet is retried, not dropped, even if its client is closed meanwhile."""
    port_holder = free_port_influx

    async def go() -> int:
        sink = InfluxV1Sink(f"http://127.0.0.1:{port_holder.port}", "retry", max_backoff_seconds=0.5)
        task = asyncio.create_task(sink.write(POINTS))
        await asyncio.sleep(1.5)
        assert not task.done() and sink.write_failures >= 1
        # the client closed under a write waiting to retry (a shutdown hook): made again
        await sink.close()
        await asyncio.to_thread(port_holder.start)
        await asyncio.wait_for(task, 30)
        await sink.close()
        return sink.points_written

    try:
        assert asyncio.run(go()) == 2
        series = influx_query(port_holder.url, "retry", "SELECT count(tickets) FROM ticket_volume")
        assert series[0]["values"][0][1] == 2
    finally:
        port_holder.stop()


def test_a_write_larger_than_influxdb_takes_in_one_request_is_sent_in_parts() -> None:
    """A spike watch catching up on a long gap writes a point for every hour of it: more
    than InfluxDB takes in one request (here its limit is set to 1 MB; its default 25 MB
    went over with a ticket dated 2099). The sink sends ``points_per_request`` at a time."""
    from pipeline.testbed.services import EmbeddedInflux

    hours = [1767600000 + 3600 * n for n in range(60_000)]  # about 6 MB of line protocol
    points = [Point("ticket_baseline", {"area": "billing", "case_type": "all"}, {"expected": 1.5}, t) for t in hours]
    with EmbeddedInflux(max_body_bytes=1_000_000) as server:

        async def write(sink: InfluxV1Sink) -> None:
            try:
                await sink.write(points)
            finally:
                await sink.close()

        async def one_request() -> None:
            sink = InfluxV1Sink(server.url, "parts")
            try:
                await sink.setup()
                await sink._write(b"\n".join(p.line().encode() for p in points))
            finally:
                await sink.close()

        with pytest.raises(SinkError, match="HTTP 413"):  # what one request of everything gets
            asyncio.run(one_request())
        sink = InfluxV1Sink(server.url, "parts")
        asyncio.run(write(sink))
        assert sink.points_written == 60_000 and sink.write_failures == 0
        (series,) = influx_query(server.url, "parts", "SELECT count(expected) FROM ticket_baseline")
        assert series["values"][0][1] == 60_000
        # and a request refused for its size is split until it fits
        sink = InfluxV1Sink(server.url, "parts", points_per_request=len(points))
        asyncio.run(write(sink))
        assert sink.points_written == 60_000 and sink.points_refused == 0


def test_credentials_refused_after_the_start_wait_until_they_are_mended(caplog) -> None:
    """A password changed in InfluxDB under a running worker (or a token revoked): the
    write waits and retries, naming the settings, and goes through once the credentials
    work again; the batch is not lost and the agent does not stop."""
    from pipeline.testbed.services import EmbeddedInflux

    admin = {"u": "admin", "p": "admin-pw"}

    def query(url: str, q: str, auth: dict[str, str] = admin, db: str | None = None) -> dict:
        # credentials in the URL (influxd reads u and p there, not in the form)
        params = urllib.parse.urlencode({**auth, **({"db": db} if db else {})})
        data = urllib.parse.urlencode({"q": q}).encode()
        with urllib.request.urlopen(f"{url}/query?{params}", data=data, timeout=10) as resp:
            return orjson.loads(resp.read())

    with EmbeddedInflux(auth_enabled=True) as server:
        # the first user is made without credentials (influxd lets it while it has none)
        query(server.url, "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES", auth={})
        query(server.url, "CREATE USER tp WITH PASSWORD 'right-pw' WITH ALL PRIVILEGES")

        async def go() -> InfluxV1Sink:
            sink = InfluxV1Sink(server.url, "guarded", username="tp", password="right-pw", max_backoff_seconds=0.3)
            await sink.setup()  # the credentials work at the start
            await asyncio.to_thread(query, server.url, "SET PASSWORD FOR tp = 'other-pw'")  # changed under it
            task = asyncio.create_task(sink.write(POINTS))
            await asyncio.sleep(1.5)
            assert not task.done() and sink.write_failures >= 2
            await asyncio.to_thread(query, server.url, "SET PASSWORD FOR tp = 'right-pw'")  # mended
            await asyncio.wait_for(task, 10)
            await sink.close()
            return sink

        with caplog.at_level("WARNING", logger="pipeline.outputs.sinks"):
            sink = asyncio.run(go())
        assert sink.points_written == 2
        warnings = [r.getMessage() for r in caplog.records if "HTTP 401" in r.getMessage()]
        assert warnings and all(
            "fix=TICKETPULSE_INFLUX_USERNAME and TICKETPULSE_INFLUX_PASSWORD" in w and "right-pw" not in w
            for w in warnings
        )
        stored = query(server.url, "SELECT count(tickets) FROM ticket_volume", db="guarded")
        assert stored["results"][0]["series"][0]["values"][0][1] == 2


@pytest.fixture
def free_port_influx():
    from pipeline.testbed.services import EmbeddedInflux

    return EmbeddedInflux()


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="url must start with http"):
        InfluxV1Sink("localhost:8086", "db")
    with pytest.raises(ValueError, match="token must not be empty"):
        InfluxV2Sink("http://x", "", "org", "bucket")
    with pytest.raises(ValueError, match="points_per_request must be at least 1"):
        InfluxV1Sink("http://x", "db", points_per_request=0)


def test_file_sink_appends_line_protocol(tmp_path) -> None:
    sink = FileSink(tmp_path / "series.lp")
    asyncio.run(sink.write(POINTS[:1]))
    asyncio.run(sink.write(POINTS[1:]))
    assert (tmp_path / "series.lp").read_text().splitlines() == [p.line() for p in POINTS]


def test_every_valid_area_a_ticket_brings_is_counted_under_it_in_influxdb(stack) -> None:
    """Issue #29, item 4, through the real broker and worker: a ticket in an area ending in a
    backslash was counted but its point refused by influxd ('invalid tag format'), so it was
    missing from the dashboards. Every area the door lets in now lands, read back as written
    (the last backslash of a value as the full-width one, the one thing influxd cannot hold)."""
    import orjson as json_bytes

    areas = [v for v in TRICKY_TAGS if "\n" not in v and len(v) <= 128 and v == v.strip()] + ["r" * 128]
    window = 1772532000
    stack.create_topics()
    stack.start_worker()
    stack.send(
        [
            (
                f"t{n}".encode(),
                json_bytes.dumps(
                    {
                        "id": f"t{n}",
                        "created_at": f"2026-03-03T10:{n:02d}:00Z",
                        "customer_id": f"c{n}",
                        "subject": "Export fails",
                        "body": "It fails.",
                        "product_area": area,
                    }
                ),
            )
            for n, area in enumerate(areas)
        ]
    )
    expected = {(window, _as_stored(area, "influxdb")): 1 for area in areas}
    assert len(expected) == len(areas) == 16
    assert stack.wait_for_counts(expected) == expected
