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

Both directions work with explicit stacks, not recursion: a chain such as
``1 + 1 + ... + 1`` is a tree as deep as it has operators, and Python's
recursion limit (1,000 calls) is lower than the deepest tree that fits in
``MAX_LENGTH`` characters (about 2,000).

Two limits refuse what is written correctly but is too large (``TooLarge``,
never called a syntax error):

- ``MAX_LENGTH`` characters. Because no operator can produce a value with
  more digits than the text that wrote it, this also keeps every intermediate
  value under Python's 4300-digit limit on turning an int into text, which
  the JSON that carries values between processes would otherwise hit.
- ``MAX_NESTING`` operators on the longest path from the root to a number.
  Each operator's operands travel as its promise's argument, a JSON array
  nested as deep as the subtree; the SDK encodes and decodes those arrays
  with msgspec, which (like Python's json) stops at about 1,500 levels
  inside CPython 3.12's C recursion limit. The id of a promise grows two
  characters per level too, which the servers index (docs/distributed.md).

The number of operators has no limit of its own: within ``MAX_LENGTH`` there
are at most about 2,000, three promises each.
"""

import re
from typing import Literal

type Op = Literal["+", "-", "*"]
type Expr = int | tuple[Op, Expr, Expr]

MAX_LENGTH = 4000
MAX_NESTING = 1000

PRECEDENCE: dict[str, int] = {"+": 1, "-": 1, "*": 2}

# One token per match: a number, an operator or parenthesis, or one
# character we do not accept (reported with its column).
_TOKEN = re.compile(r"\s*(?:([0-9]+)|(\*\*|[-+*()])|(\S))")


class ParseError(ValueError):
    """Text that is not taken; ``column`` is 0-based (None: the text as a whole).

    This class itself is a syntax error: not an expression of the grammar.
    """

    def __init__(self, message: str, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class TooLarge(ParseError):
    """An expression, but larger than the limits above: the message says which, and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None)


def parse(text: str) -> Expr:
    """Parse ``text`` into an expression tree, or raise ``ParseError``."""
    if len(text) > MAX_LENGTH:
        raise TooLarge(f"expression too long: {len(text)} characters (the limit is {MAX_LENGTH})")
    expr, nesting = _Parser(text).parse()
    if nesting > MAX_NESTING:
        raise TooLarge(
            f"nested {nesting} deep (the limit is {MAX_NESTING}: each level is a promise's "
            "argument inside its parent's, and the SDK's JSON stops at about 1,500 levels)"
        )
    return expr


def render(expr: Expr) -> str:
    """Write ``expr`` as infix text with only the parentheses it needs."""
    # Each node is visited twice: first to queue its operands, then (marked
    # ready) to join their texts, which by then lie on ``done``.
    todo: list[tuple[Expr, bool]] = [(expr, False)]
    done: list[str] = []
    while todo:
        node, ready = todo.pop()
        match node:
            case [op, lhs, rhs] if ready:
                right, left = done.pop(), done.pop()
                # Equal precedence groups to the left, so a right operand of
                # the same precedence keeps its parentheses: 8 - (3 - 2).
                if _precedence(lhs) < PRECEDENCE[op]:
                    left = f"({left})"
                if _precedence(rhs) <= PRECEDENCE[op]:
                    right = f"({right})"
                done.append(f"{left} {op} {right}")
            case [_, lhs, rhs]:
                todo += [(node, True), (rhs, False), (lhs, False)]
            case _:
                done.append(str(node))
    return done[0]


def _precedence(expr: Expr) -> int:
    match expr:
        case [op, _, _]:
            return PRECEDENCE[op]
        case _:
            return 3


# An operand on the parser's stack: its tree, and how deep that tree is.
type _Operand = tuple[Expr, int]


class _Group:
    """One level of parentheses being read (the outermost level is one too)."""

    def __init__(self, column: int | None, negations: list[int]) -> None:
        self.column = column  # of its '(' (None: the whole text)
        self.negations = negations  # columns of the minus signs in front of it
        self.operands: list[_Operand] = []
        self.operators: list[str] = []  # each binds operands[i] and operands[i + 1]

    def push_operator(self, op: str) -> None:
        # Left associative: what binds at least as tightly is reduced first.
        while self.operators and PRECEDENCE[self.operators[-1]] >= PRECEDENCE[op]:
            self.reduce()
        self.operators.append(op)

    def reduce(self) -> None:
        (rhs, right), (lhs, left) = self.operands.pop(), self.operands.pop()
        self.operands.append(((_op(self.operators.pop()), lhs, rhs), 1 + max(left, right)))

    def close(self) -> _Operand:
        while self.operators:
            self.reduce()
        return self.operands[0]


class _Parser:
    """Operator precedence over a token list, with one ``_Group`` per open parenthesis.

    It reads the same grammar as a recursive descent (one function per
    precedence level) would, and reports the same errors at the same columns.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.groups = [_Group(None, [])]  # the outermost last: where operands go
        self.negations: list[int] = []  # minus signs read in front of the next operand
        self.expecting_operand = True  # else an operator, or a ')'

    def parse(self) -> _Operand:
        if not self.tokens:
            raise ParseError("empty expression", 0)
        for token, column in self.tokens:
            if self.expecting_operand:
                self.operand(token, column)
            else:
                self.operator(token, column)
        if self.expecting_operand:
            raise ParseError("expected a number or '(' at the end", len(self.text))
        if (unclosed := self.groups[-1].column) is not None:
            raise ParseError("'(' is never closed", unclosed)
        return self.groups[0].close()

    def operand(self, token: str, column: int) -> None:
        """A token where an operand must start: a minus, '(' or a number."""
        if token == "-":
            self.negations.append(column)
        elif token == "(":
            self.groups.append(_Group(column, self.negations))
            self.negations = []
        elif token.isdigit():
            self.groups[-1].operands.append(_negated((int(token), 0), self.negations))
            self.negations, self.expecting_operand = [], False
        else:
            raise ParseError(f"expected a number or '(' before '{token}'", column)

    def operator(self, token: str, column: int) -> None:
        """A token after an operand: an operator, or the ')' that ends a group."""
        group = self.groups[-1]
        if token in PRECEDENCE:
            group.push_operator(token)
            self.expecting_operand = True
        elif token == ")" and group.column is not None:
            self.groups.pop()
            self.groups[-1].operands.append(_negated(group.close(), group.negations))
        elif group.column is not None:
            raise ParseError("'(' is never closed", group.column)
        elif token == ")":
            raise ParseError("unmatched ')'", column)
        else:
            raise ParseError(f"expected an operator before '{token}'", column)


def _negated(operand: _Operand, negations: list[int]) -> _Operand:
    """``operand`` under the minus signs in front of it: a number's folded into it."""
    expr, nesting = operand
    for _ in negations:
        if isinstance(expr, int):
            expr = -expr
        else:
            expr, nesting = ("*", -1, expr), nesting + 1
    return expr, nesting


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
