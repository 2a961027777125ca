"""Arithmetic text to expression trees, and back.

    >>> parse("(1 + 2) * -3")
    ('*', ('+', 1, 2), -3)
    >>> render(("-", 8, ("-", 3, 2)))
    '8 - (3 - 2)'

The grammar is the usual one: ``*`` binds tighter than ``+`` and ``-``, all
three are left associative, and a unary minus binds tightest of all. A minus
in front of a number is folded into the number; in front of anything else it
becomes a multiplication by -1, so the tree only ever holds the three binary
operators the workers know.

Limits keep every input cheap to reject and every tree safe to evaluate:

- ``MAX_LENGTH`` characters. Because no operator can produce a value with
  more digits than the text that wrote it, this also keeps every intermediate
  value under Python's 4300-digit limit on turning an int into text, which
  the JSON that carries values between processes would otherwise hit.
- ``MAX_DEPTH`` nested parentheses, so parsing never nears Python's recursion
  limit.
- ``MAX_OPERATORS`` operators, since each one costs three durable promises.
"""

import re
from typing import Literal

type Op = Literal["+", "-", "*"]
type Expr = int | tuple[Op, Expr, Expr]

MAX_LENGTH = 4000
MAX_DEPTH = 100
MAX_OPERATORS = 200

PRECEDENCE: dict[str, int] = {"+": 1, "-": 1, "*": 2}

# One token per match: a number, an operator or parenthesis, or one
# character we do not accept (reported with its column).
_TOKEN = re.compile(r"\s*(?:([0-9]+)|(\*\*|[-+*()])|(\S))")


class ParseError(ValueError):
    """Text that is not an expression; ``column`` is 0-based (None: the text as a whole)."""

    def __init__(self, message: str, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


def parse(text: str) -> Expr:
    """Parse ``text`` into an expression tree, or raise ``ParseError``."""
    if len(text) > MAX_LENGTH:
        raise ParseError(
            f"expression too long: {len(text)} characters (the limit is {MAX_LENGTH})", None
        )
    return _Parser(text).parse()


def render(expr: Expr) -> str:
    """Write ``expr`` as infix text with only the parentheses it needs."""
    match expr:
        case [op, lhs, rhs]:
            left, right = render(lhs), render(rhs)
            # Equal precedence groups to the left, so a right operand of the
            # same precedence keeps its parentheses: 8 - (3 - 2).
            if _precedence(lhs) < PRECEDENCE[op]:
                left = f"({left})"
            if _precedence(rhs) <= PRECEDENCE[op]:
                right = f"({right})"
            return f"{left} {op} {right}"
        case _:
            return str(expr)


def _precedence(expr: Expr) -> int:
    match expr:
        case [op, _, _]:
            return PRECEDENCE[op]
        case _:
            return 3


class _Parser:
    """Recursive descent over a token list; one method per precedence level."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0
        self.operators = 0

    def parse(self) -> Expr:
        if not self.tokens:
            raise ParseError("empty expression", 0)
        expr = self.sum()
        if self.pos < len(self.tokens):
            token, column = self.tokens[self.pos]
            if token == ")":
                raise ParseError("unmatched ')'", column)
            raise ParseError(f"expected an operator before '{token}'", column)
        return expr

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, int]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def count_operator(self, column: int) -> None:
        self.operators += 1
        if self.operators > MAX_OPERATORS:
            raise ParseError(f"too many operators (the limit is {MAX_OPERATORS})", column)

    def sum(self) -> Expr:
        expr = self.product()
        while (op := self.peek()) in ("+", "-"):
            self.count_operator(self.take()[1])
            expr = (_op(op), expr, self.product())
        return expr

    def product(self) -> Expr:
        expr = self.unary()
        while self.peek() == "*":
            self.count_operator(self.take()[1])
            expr = ("*", expr, self.unary())
        return expr

    def unary(self) -> Expr:
        negations: list[int] = []
        while self.peek() == "-":
            negations.append(self.take()[1])
        expr = self.primary()
        for column in reversed(negations):
            if isinstance(expr, int):
                expr = -expr
            else:
                self.count_operator(column)
                expr = ("*", -1, expr)
        return expr

    def primary(self) -> Expr:
        if self.pos == len(self.tokens):
            raise ParseError("expected a number or '(' at the end", len(self.text))
        token, column = self.take()
        if token.isdigit():
            return int(token)
        if token == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ParseError(
                    f"parentheses nested too deeply (the limit is {MAX_DEPTH})", column
                )
            expr = self.sum()
            if self.peek() != ")":
                raise ParseError("'(' is never closed", column)
            self.take()
            self.depth -= 1
            return expr
        raise ParseError(f"expected a number or '(' before '{token}'", column)


def _tokenize(text: str) -> list[tuple[str, int]]:
    tokens: list[tuple[str, int]] = []
    for match in _TOKEN.finditer(text):
        number, symbol, other = match.groups()
        column = match.start(match.lastindex or 0)
        if symbol == "**":
            raise ParseError("'**' is not supported: use +, - or *", column)
        if other == ".":
            raise ParseError("only whole numbers are supported", column)
        if other is not None:
            raise ParseError(f"unexpected character '{other}': {_hint(other, tokens)}", column)
        tokens.append((number or symbol, column))
    return tokens


def _hint(char: str, before: list[tuple[str, int]]) -> str:
    """What would have been right where ``char`` stands."""
    if char.isdigit():  # a digit of another script: fullwidth, Arabic-Indic...
        return "only the digits 0-9 count"
    if before and (before[-1][0].isdigit() or before[-1][0] == ")"):
        return "use +, - or *"
    return "expected a number or '('"


def _op(token: str) -> Op:
    match token:
        case "+" | "-" | "*":
            return token
    raise AssertionError(token)
