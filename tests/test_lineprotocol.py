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
