from __future__ import annotations

from pipeline.outputs.lineprotocol import Point, to_line_protocol


def test_escapes_tags_measurement_and_strings() -> None:
    p = Point(
        "ticket volume", {"area": "a,b=c d", "empty": ""}, {"note": 'say "hi" \\o/', "n": 3, "x": 0.5, "ok": True}, 60
    )
    assert p.line() == 'ticket\\ volume,area=a\\,b\\=c\\ d note="say \\"hi\\" \\\\o/",n=3i,x=0.5,ok=true 60'


def test_tags_are_sorted_and_batches_join_with_newlines() -> None:
    a = Point("m", {"z": "1", "a": "2"}, {"v": 1}, 0)
    b = Point("m", {"a": "3"}, {"v": 2}, 3600)
    assert to_line_protocol([a, b]) == b"m,a=2,z=1 v=1i 0\nm,a=3 v=2i 3600"


def test_influxdb_keeps_backslashes_as_written_and_a_last_one_is_full_width() -> None:
    """InfluxDB 1.x/2.x read a backslash as escaping only ``,`` ``=`` and space: others stay
    as written, and one at the end cannot be written (it would escape the separator)."""
    p = Point("m", {"area": "c:\\share\\", "k": "a\\,b"}, {"v": 1}, 0)
    assert p.line() == "m,area=c:\\share\uff3c,k=a\\\\,b v=1i 0"


def test_victoriametrics_reads_two_backslashes_as_one_so_they_are_doubled() -> None:
    p = Point("m", {"area": "c:\\share\\", "k": "a\\,b"}, {"v": 1}, 0)
    assert p.line("victoriametrics") == "m,area=c:\\\\share\\\\,k=a\\\\\\,b v=1i 0"


def test_a_line_break_in_a_tag_never_breaks_the_line() -> None:
    assert Point("m", {"area": "a\nb"}, {"v": 1}, 0).line() == "m,area=a\\nb v=1i 0"
    assert Point("m", {"area": "a\nb"}, {"v": 1}, 0).line("victoriametrics") == "m,area=a\\\\nb v=1i 0"


def test_a_tag_value_is_bounded_and_long_ones_stay_distinct() -> None:
    from pipeline.outputs.lineprotocol import MAX_TAG_VALUE_CHARS, bounded_tag_value

    a, b = bounded_tag_value("x" * 990_000), bounded_tag_value("x" * 989_999 + "y")
    assert len(a) == len(b) == MAX_TAG_VALUE_CHARS and a != b
    assert a.startswith("x" * 200)
    line = Point("m", {"area": "x" * 990_000}, {"v": 1}, 0).line()
    assert len(line) < 300
