"""The parser: precedence, associativity, unary minus, errors and limits."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resonator.parser import (
    MAX_LENGTH,
    MAX_NESTING,
    Expr,
    ParseError,
    TooLarge,
    parse,
    render,
)
from tests.helpers import expressions, oracle

# The fast tier (`uv run pytest -m fast`): the lesson's logic, in-process.
pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("text", "expr"),
    [
        ("1 + 2 * 3", ("+", 1, ("*", 2, 3))),
        ("1 * 2 + 3", ("+", ("*", 1, 2), 3)),
        ("8 - 3 - 2", ("-", ("-", 8, 3), 2)),
        ("2 * 3 * 4", ("*", ("*", 2, 3), 4)),
        ("8 - (3 - 2)", ("-", 8, ("-", 3, 2))),
        ("(1 + 2) * (3 - 4)", ("*", ("+", 1, 2), ("-", 3, 4))),
        ("-3", -3),
        ("--4", 4),
        ("2 * -3", ("*", 2, -3)),
        ("1 - -2", ("-", 1, -2)),
        ("-(1 + 2)", ("*", -1, ("+", 1, 2))),
        ("\t( 7 )\n", 7),
        ("123456789012345678901234567890", 123456789012345678901234567890),
    ],
)
def test_grammar(text: str, expr: Expr) -> None:
    assert parse(text) == expr


@pytest.mark.parametrize(
    ("text", "value"),
    [("1 + 2 * 3", 7), ("8 - 3 - 2", 3), ("-(2 + 3) * 4", -20), ("(1 + 2) * (3 - 4)", -3)],
)
def test_precedence_matches_arithmetic(text: str, value: int) -> None:
    assert oracle(render(parse(text))) == value


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "empty expression", 0),
        ("   ", "empty expression", 0),
        ("(1", "'(' is never closed", 0),
        ("2 * (1 + 3", "'(' is never closed", 4),
        ("1 + 2)", "unmatched ')'", 5),
        ("(1 +", "expected a number or '(' at the end", 4),
        ("1 + * 2", "expected a number or '(' before '*'", 4),
        ("+3", "expected a number or '(' before '+'", 0),
        ("1 2", "expected an operator before '2'", 2),
        ("(1 + 2) 3", "expected an operator before '3'", 8),
        ("(1) (2)", "expected an operator before '('", 4),
        ("1 / 2", "unexpected character '/': use +, - or *", 2),
        ("x", "unexpected character 'x': expected a number or '('", 0),
        ("2 x", "unexpected character 'x': use +, - or *", 2),
        ("(1) x", "unexpected character 'x': use +, - or *", 4),
        ("1 + abc", "unexpected character 'a': expected a number or '('", 4),
        ("1.5", "only whole numbers are supported", 1),
        ("2 ** 3", "'**' is not supported: use +, - or *", 2),
        ("\u0663", "unexpected character '\u0663': only the digits 0-9 count", 0),
        ("\uff11+\uff12", "unexpected character '\uff11': only the digits 0-9 count", 0),
    ],
)
def test_errors_carry_message_and_column(text: str, message: str, column: int) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text)
    assert (caught.value.message, caught.value.column) == (message, column)
    assert isinstance(caught.value, ValueError)


def test_length_limit() -> None:
    assert parse("1" * MAX_LENGTH) == int("1" * MAX_LENGTH)
    with pytest.raises(TooLarge) as caught:
        parse("1" * (MAX_LENGTH + 1))
    assert (
        caught.value.message == f"expression too long: 4001 characters (the limit is {MAX_LENGTH})"
    )
    assert caught.value.column is None


def chain(operators: int) -> str:
    """``1 + 1 + ... + 1``: a tree as deep as it has operators, leaning left."""
    return "+".join(["1"] * (operators + 1))


def depth(expr: Expr) -> int:
    """Operators on the longest path from the root to a number, counted without recursion."""
    deepest, todo = 0, [(expr, 0)]
    while todo:
        node, above = todo.pop()
        if isinstance(node, tuple):
            todo += [(node[1], above + 1), (node[2], above + 1)]
        deepest = max(deepest, above)
    return deepest


def zigzag(levels: int) -> str:
    """A tree ``levels`` deep whose path turns right and left by turns."""
    text = "1"
    for level in range(levels):
        text = f"1-({text})" if level % 2 else f"{text}+1"
    return text


def test_the_nesting_limit_refuses_in_one_line_that_is_no_syntax_error() -> None:
    assert depth(parse(chain(MAX_NESTING))) == MAX_NESTING
    with pytest.raises(TooLarge) as caught:
        parse(chain(MAX_NESTING + 1))
    assert caught.value.message == (
        f"nested {MAX_NESTING + 1} deep (the limit is {MAX_NESTING}: each level is a "
        "promise's argument inside its parent's, and the SDK's JSON stops at about 1,500 levels)"
    )
    assert caught.value.column is None
    # Turning right (in parentheses) and left by turns, it counts the same.
    with pytest.raises(TooLarge, match=f"^nested {MAX_NESTING + 1} deep"):
        parse(zigzag(MAX_NESTING + 1))
    # A minus in front of a parenthesis is a multiplication by -1: a level.
    with pytest.raises(TooLarge, match=f"^nested {MAX_NESTING + 1} deep"):
        parse("-(" + chain(MAX_NESTING) + ")")


def test_no_limit_on_operators_or_parentheses_of_their_own() -> None:
    # A balanced tree of depth 10: 1,023 operators in 3,411 characters.
    text = "1"
    for level in range(1, 11):
        text = f"{text}+{text}" if level % 2 else f"({text})*({text})"
    wide = parse(text)
    assert (len(text), depth(wide)) == (3411, 10)
    assert oracle(render(wide)) == oracle(text) == 2**62
    # Parentheses add no depth: as many as fit.
    assert parse("(" * 1999 + "7" + ")" * 1999) == 7


def test_the_deepest_and_longest_trees_parse_and_render_without_recursion() -> None:
    # Python's recursion limit (1,000 calls) is below these trees' depth.
    for text in (chain(MAX_NESTING), zigzag(MAX_NESTING)):
        assert render(parse(text)).replace(" ", "") == text
    assert oracle(render(parse(chain(MAX_NESTING)))) == MAX_NESTING + 1
    assert parse("-" * (MAX_LENGTH - 1) + "1") == -1
    for text in ["(" * MAX_LENGTH, "-(" * (MAX_LENGTH // 2)]:
        with pytest.raises(ParseError, match="at the end"):
            parse(text)


# ── Properties ──────────────────────────────────────────────────────────────

spaces = st.sampled_from(["", " ", "  ", "\t", "\n", " \n "])


def noisy(data: st.DataObject, expr: Expr) -> str:
    """``expr`` as text with random spacing and redundant parentheses.

    Every operand of an operator is parenthesised, which is always correct,
    and any part may be wrapped again.
    """
    match expr:
        case (op, lhs, rhs):
            text = (
                f"({noisy(data, lhs)}){data.draw(spaces)}{op}"
                f"{data.draw(spaces)}({noisy(data, rhs)})"
            )
        case _:
            text = str(expr)
    for _ in range(data.draw(st.integers(0, 2))):
        text = f"({data.draw(spaces)}{text}{data.draw(spaces)})"
    return text


@given(expressions)
def test_render_round_trips(expr: Expr) -> None:
    assert parse(render(expr)) == expr


@given(st.data(), expressions)
def test_noisy_text_parses_to_the_same_expression(data: st.DataObject, expr: Expr) -> None:
    text = noisy(data, expr)
    assert parse(text) == expr
    assert oracle(render(parse(text))) == oracle(text)


@given(st.text(alphabet="0123456789+-*() ", max_size=30))
def test_anything_from_the_alphabet_parses_like_python_or_fails_cleanly(text: str) -> None:
    try:
        tree = parse(text)
    except ParseError as error:
        assert error.column is not None and 0 <= error.column <= len(text)
        return
    # Whatever we accept, Python reads as the same number.
    # (Python will not read 007, only 7.)
    python = re.sub(r"\b0+(\d)", r"\1", text)
    assert oracle(render(tree)) == oracle(python)
