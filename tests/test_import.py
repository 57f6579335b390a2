"""History import: a helpdesk's export into the real broker, bad rows reported by line."""

from __future__ import annotations

import os
import subprocess

import orjson
import pytest

from .conftest import TICKETPULSE

CSV = """\
Ref,Opened,Client,Title,Text,Team,Prio
A-1,2026-03-03T10:01:00+00:00,cust-1,Export fails,The CSV export fails,reports,high
A-2,2026-03-03T10:05:00+00:00,cust-2,Refund,We were charged twice,billing,low
A-3,not a date,cust-3,Broken,Something,reports,low
A-4,2026-03-03T11:30:00+00:00,,No customer,Nobody wrote this,reports,low
A-1,2026-03-03T10:01:00+00:00,cust-1,Export fails,The CSV export fails (update),reports,high
"""
MAP = [
    "Ref=id",
    "Opened=created_at",
    "Client=customer_id",
    "Title=subject",
    "Text=body",
    "Team=product_area",
    "Prio=severity",
]


@pytest.mark.integration
def test_csv_export_with_a_column_mapping_goes_to_kafka_and_bad_rows_are_named(stack, tmp_path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(CSV)
    stack.create_topics()
    args = [TICKETPULSE, "import", str(path), "--format", "csv", "--quiet"]
    for m in MAP:
        args += ["--map", m]
    r = subprocess.run(args, env=stack.env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr  # some rows were rejected
    assert r.stdout.strip().splitlines()[-1].startswith("sent=3 rejected=2 ")
    errors = r.stderr.strip().splitlines()
    assert "rejected line 4: field 'created_at' is not an ISO 8601 date-time: 'not a date'" in errors
    assert "rejected line 5: missing required field 'customer_id'" in errors
    on_topic = stack.read_topic(stack.settings.topic_tickets, expected=3)
    assert sorted(t["id"] for t in on_topic) == ["A-1", "A-1", "A-2"]  # the update of A-1 too: counted once
    assert {t["product_area"] for t in on_topic} == {"reports", "billing"}
    stack.start_worker()
    assert stack.wait_for_counts({(1772532000, "reports"): 1, (1772532000, "billing"): 1}) == {
        (1772532000, "reports"): 1,
        (1772532000, "billing"): 1,
    }


def test_freshdesk_and_zendesk_exports_replay_into_the_tagger(tmp_path) -> None:
    fd = tmp_path / "freshdesk.csv"
    fd.write_text(
        "Ticket ID,Subject,Description,Created time,Priority,Type,Tags,Group,Requester email\n"
        '11,Charged twice,Card charged twice,2026-03-03 10:00:00,High,Refund,"area:billing, invoice",Billing,a@x.io\n'
        "12,How do I export?,Where is the export,2026-03-03 11:00:00,Low,Question,area:reports,Reports,b@x.io\n"
        ",No id,Broken row,2026-03-03 11:00:00,Low,Question,,Reports,c@x.io\n"
    )
    out = tmp_path / "pred.jsonl"
    r = subprocess.run(
        [TICKETPULSE, "import", str(fd), "--format", "freshdesk", "--replay", "--output", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    summary = orjson.loads(r.stdout.strip().splitlines()[-1])
    assert summary["tickets"] == 2 and summary["rejected"] == 1
    assert "rejected line 4: no 'ticket_id' in the payload" in r.stderr
    assert [orjson.loads(x)["id"] for x in out.read_bytes().splitlines()] == ["freshdesk-11", "freshdesk-12"]
    assert summary["prequential"]["product_area"]["labelled"] == 2
    zd = tmp_path / "zendesk.json"
    zd.write_bytes(
        orjson.dumps(
            {
                "tickets": [
                    {
                        "id": 1,
                        "created_at": "2026-03-03T10:00:00Z",
                        "requester_id": 5,
                        "subject": "Login loop",
                        "description": "Cannot log in",
                        "priority": "urgent",
                        "type": "incident",
                        "tags": ["area:login"],
                    },
                    {
                        "id": 2,
                        "created_at": "2026-03-03T10:10:00Z",
                        "requester_id": 6,
                        "subject": "Login loop again",
                        "description": "Still cannot log in",
                        "priority": "high",
                        "type": "incident",
                        "tags": ["area:login"],
                    },
                ]
            }
        )
    )
    # naive Bayes learns from the first label; the linear tagger (the default) waits for a step of 16
    r = subprocess.run(
        [TICKETPULSE, "import", str(zd), "--format", "zendesk", "--replay", "--output", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TICKETPULSE_TAGGER": "words"},
    )
    assert r.returncode == 0, r.stderr
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [x["id"] for x in rows] == ["zendesk-1", "zendesk-2"]
    assert rows[1]["predicted"]["product_area"]["label"] == "login"


def test_a_gzipped_export_reads_as_the_plain_one(tmp_path) -> None:
    import gzip

    from pipeline.ingest.importer import read_export

    lines = b'{"id": "a", "subject": "x"}\n{"id": "b", "subject": "y"}\nnot json\n'
    (tmp_path / "t.jsonl").write_bytes(lines)
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(CSV.encode()))
    plain = list(read_export(tmp_path / "t.jsonl", "jsonl"))
    assert len(plain) == 3 and plain[2][0] == 3 and isinstance(plain[2][1], str)
    assert list(read_export(tmp_path / "t.jsonl.gz", "jsonl")) == plain
    mapping = dict(m.split("=") for m in MAP)
    rows = list(read_export(tmp_path / "t.csv", "csv", mapping))
    assert len(rows) == 5 and list(read_export(tmp_path / "t.csv.gz", "csv", mapping)) == rows
