"""Text as a terminal shows it: escaped controls, columns, and a caret under a column."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from resonator.parser import TooLarge

if TYPE_CHECKING:
    from resonator.parser import ParseError

WINDOW = 60  # columns of a long input shown at once, around its error


def not_computed(text: str, error: ParseError) -> str:
    """Why ``text`` is not computed, as a person should read it.

    An expression too large to carry is said as it is, in one line; anything
    else is a syntax error, with a caret under its column.
    """
    if isinstance(error, TooLarge):
        return escaped(error.message)
    return syntax_error(text, error)


def syntax_error(text: str, error: ParseError) -> str:
    """The message, the input as a terminal shows it, and a caret under the column.

    Control characters are shown escaped (``\\x00``), in the input and in the
    message alike; tabs as the spaces they would take; and a long input as a
    window around the column. An error of no column, or of an input with
    nothing to point at, is the message alone.
    """
    message = escaped(error.message)
    if error.column is None or not text.strip():
        return f"syntax error: {message}"
    pieces = [shown(char) for char in expand_tabs(text)]
    column = len(expand_tabs(text[: error.column]))
    widths = [width(piece) for piece in pieces]
    start, end = 0, len(pieces)
    if sum(widths) > WINDOW:
        start = max(0, min(column - WINDOW // 2, len(pieces) - WINDOW // 2))
        end = start
        while end < len(pieces) and sum(widths[start : end + 1]) <= WINDOW:
            end += 1
    before = "…" if start > 0 else ""
    after = "…" if end < len(pieces) else ""
    caret = len(before) + sum(widths[start:column])
    line = before + "".join(pieces[start:end]) + after
    return f"syntax error: {message}\n  {line}\n  {' ' * caret}^"


def shortened(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: its middle left out, where an ellipsis stands."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def expand_tabs(text: str) -> str:
    return text.expandtabs(8)


def escaped(text: str) -> str:
    """``text`` as it can be safely printed: control and format characters escaped."""
    return "".join(map(shown, text))


def shown(char: str) -> str:
    """A character as it can be safely printed: control and format characters escaped."""
    if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
        return char.encode("unicode_escape").decode("ascii")
    return char


def width(piece: str) -> int:
    """Terminal columns: wide characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in piece
    )
