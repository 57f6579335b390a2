"""The docs say what the code does: the settings table, the variables, commands and targets they name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.commands import cli
from pipeline.commands.docs import TABLE_END, TABLE_START, main, with_settings_table
from pipeline.settings import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _table_rows(table: str) -> dict[str, tuple[str, str]]:
    """variable -> (default, meaning), from the generated table's body rows."""
    rows = {}
    for line in table.splitlines()[2:]:
        variable, default, meaning = (cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1])
        rows[variable.strip("`")] = (default, meaning)
    return rows


def test_the_settings_table_in_operations_md_is_the_one_the_settings_object_gives() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    assert with_settings_table(text) == text, "docs/operations.md's settings table is out of date: run `make docs`"
    assert settings_table() in text


def test_the_table_has_one_row_a_setting_with_its_default_and_meaning() -> None:
    rows = _table_rows(settings_table())
    assert list(rows) == [f"TICKETPULSE_{name.upper()}" for name in Settings.model_fields]
    assert rows["TICKETPULSE_WINDOW_SECONDS"] == ("`3600`", "size of a volume window.")
    assert rows["TICKETPULSE_TAGGING_ENABLED"][0] == "`true`"
    assert rows["TICKETPULSE_INFLUX_URL"][0] == "unset"
    assert rows["TICKETPULSE_MAX_FUTURE_HOURS"][0] == "`24`"
    assert rows["TICKETPULSE_BATCH_SECONDS"][0] == "`0.5`"
    assert rows["TICKETPULSE_TAGGER_FEATURE_BUCKETS"][0] == f"`{2**18}`"
    assert all(meaning and not meaning.startswith("TICKETPULSE_") for _, meaning in rows.values())


def test_a_meaning_with_a_pipe_or_line_breaks_stays_in_its_cell() -> None:
    class Tiny(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="TINY_")
        mode: str = Field("a", description="TINY_MODE: 'a' | 'b',\n   the second   slower.")

    assert settings_table(Tiny).splitlines()[2] == "| `TINY_MODE` | `a` | 'a' \\| 'b', the second slower. |"


def test_the_docs_command_rewrites_a_stale_table_and_check_says_so(tmp_path: Path) -> None:
    doc = tmp_path / "operations.md"
    doc.write_text(f"# Ops\n\n{TABLE_START}\n| stale |\n{TABLE_END}\n\nafter\n", encoding="utf-8")
    assert main(["--check", str(doc)]) == 1
    assert "| stale |" in doc.read_text(encoding="utf-8")  # --check changes nothing
    assert main([str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == f"# Ops\n\n{TABLE_START}\n{settings_table()}{TABLE_END}\n\nafter\n"
    assert main(["--check", str(doc)]) == 0


@pytest.mark.parametrize(
    "text",
    [
        "# no markers\n",
        f"{TABLE_START}\nno end\n",
        f"{TABLE_END}\n{TABLE_START}\n",
        f"{TABLE_START}\n{TABLE_END}\n{TABLE_START}\n{TABLE_END}\n",
    ],
)
def test_markers_missing_twice_or_reversed_are_named(text: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one line"):
        with_settings_table(text)
    doc = tmp_path / "operations.md"
    doc.write_text(text, encoding="utf-8")
    assert main([str(doc)]) == 2


def test_every_variable_the_docs_name_is_a_setting() -> None:
    known = {f"TICKETPULSE_{name.upper()}" for name in Settings.model_fields}
    for path in USER_DOCS:
        named = set(re.findall(r"TICKETPULSE_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
        # prefixes of a group of settings, as in TICKETPULSE_TOPIC_* or TICKETPULSE_INFLUX_*
        named = {n for n in named if not any(k.startswith(n + "_") for k in known)}
        assert named <= known, f"{path.name} names settings that do not exist: {sorted(named - known)}"


def test_every_command_the_docs_name_exists(capsys: pytest.CaptureFixture[str]) -> None:
    for path in USER_DOCS:
        # as typed: `ticketpulse X`, .venv/bin/ticketpulse X, docker compose run --rm worker ticketpulse X
        typed = re.findall(r"(?:`|/|--rm worker )ticketpulse ([a-z]+)", path.read_text(encoding="utf-8"))
        for command in sorted(set(typed)):
            with pytest.raises(SystemExit) as exit_info:
                cli.main([command, "--help"])
            assert exit_info.value.code == 0, f"{path.name}: `ticketpulse {command}` is not a command"
    capsys.readouterr()


def test_every_make_target_the_docs_name_exists() -> None:
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE))
    for path in USER_DOCS:
        named = set(re.findall(r"`make ([a-z-]+)", path.read_text(encoding="utf-8")))
        assert named <= targets, f"{path.name} names make targets that do not exist: {sorted(named - targets)}"
