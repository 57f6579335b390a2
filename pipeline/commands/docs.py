"""Write the generated parts of the docs: ``python -m pipeline.commands.docs`` (``make docs``).

docs/operations.md holds the settings table between two marker lines; this command
replaces what lies between them with :func:`pipeline.settings.settings_table`, so
that a field added or changed in ``pipeline/settings.py`` reaches the docs by running
it. ``--check`` changes nothing and exits 1 when the file is out of date (what
``tests/test_docs.py`` asserts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.settings import settings_table

__all__ = ["TABLE_END", "TABLE_START", "main", "with_settings_table"]

#: The line before the generated table.
TABLE_START = "<!-- settings table: generated from pipeline/settings.py by `make docs`; edit the fields there -->"
#: The line after it.
TABLE_END = "<!-- end of the generated settings table -->"


def with_settings_table(text: str, table: str | None = None) -> str:
    """``text`` with the lines between the two markers replaced by the settings table.

    Parameters
    ----------
    text
        A markdown document holding :data:`TABLE_START` and then :data:`TABLE_END`,
        each on a line of its own.
    table
        The table to put there; by default :func:`pipeline.settings.settings_table`.

    Returns
    -------
    str
        The document with the table in place (the same text when it was already there).

    Raises
    ------
    ValueError
        When a marker is missing, appears twice, or the end comes before the start.

    Examples
    --------
    >>> doc = f"# Settings\\n{TABLE_START}\\nold\\n{TABLE_END}\\nmore\\n"
    >>> print(with_settings_table(doc, "| a |\\n"), end="")
    # Settings
    <!-- settings table: generated from pipeline/settings.py by `make docs`; edit the fields there -->
    | a |
    <!-- end of the generated settings table -->
    more
    """
    lines = text.splitlines(keepends=True)
    starts = [n for n, line in enumerate(lines) if line.strip() == TABLE_START]
    ends = [n for n, line in enumerate(lines) if line.strip() == TABLE_END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(
            f"expected one line {TABLE_START!r} and after it one line {TABLE_END!r} "
            f"(found {len(starts)} and {len(ends)})"
        )
    body = settings_table() if table is None else table
    return "".join(lines[: starts[0] + 1]) + body + "".join(lines[ends[0] :])


def main(argv: list[str] | None = None) -> int:
    """Rewrite the settings table of ``docs/operations.md`` (or check it with ``--check``)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.docs", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=Path("docs/operations.md"), help="the document")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the table is out of date")
    args = parser.parse_args(argv)
    try:
        text = args.path.read_text(encoding="utf-8")
        updated = with_settings_table(text)
    except (OSError, ValueError) as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 2
    if updated == text:
        print(f"{args.path}: settings table up to date")
        return 0
    if args.check:
        print(f"{args.path}: settings table out of date; run `make docs`", file=sys.stderr)
        return 1
    args.path.write_text(updated, encoding="utf-8")
    print(f"{args.path}: settings table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
