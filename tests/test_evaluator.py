"""The four durable functions, through the SDK's in-process server."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings

from resonator.parser import MAX_LENGTH, Expr, parse, render
from tests.helpers import embedded, expressions, oracle

# The fast tier (`uv run pytest -m fast`): the lesson's logic, in-process.
pytestmark = pytest.mark.fast


async def evaluate(*texts: str) -> list[int]:
    async with embedded() as (resonate, _):
        handles = [resonate.run(f"t{i}", "=", parse(text)) for i, text in enumerate(texts)]
        return [await handle.result() for handle in handles]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7),
        ("-7", -7),
        ("2 + 3", 5),
        ("2 - 3", -1),
        ("2 * 3", 6),
        ("-2 * -3", 6),
        ("1 + 2 * 3", 7),
        ("8 - 3 - 2", 3),
        ("-(2 + 3) * 4", -20),
        ("((1 + 2) * (3 - 4)) * ((5 - 6) * (7 + 8))", 45),
        (
            "123456789012345678901234567890 * 987654321098765432109876543210",
            123456789012345678901234567890 * 987654321098765432109876543210,
        ),
        ("-999999999999999999999999999999 - 1", -(10**30)),
    ],
)
def test_values(text: str, value: int) -> None:
    assert asyncio.run(evaluate(text)) == [value]


def test_the_longest_numbers_the_parser_allows_still_cross_between_processes() -> None:
    # Values travel as JSON, which cannot carry ints past 4300 digits; the
    # parser's length limit keeps every result below that.
    nines = "9" * ((MAX_LENGTH - 3) // 2)
    assert asyncio.run(evaluate(f"{nines} * {nines}")) == [int(nines) ** 2]


def test_the_articles_examples_at_once() -> None:
    # The article's three examples, in flight together on one server.
    texts = ["(1 + 2) * (3 - 4)", "1 + 2 * 3", "8 - 3 - 2"]
    assert asyncio.run(evaluate(*texts)) == [-3, 7, 3]


def test_every_node_is_a_durable_promise_with_its_route() -> None:
    async def scenario() -> dict[str, tuple[str, object]]:
        async with embedded() as (resonate, _):
            await resonate.run("calc", "=", parse("(1 + 2) * (3 - 4)")).result()
            ids = ["calc", "calc:1", "calc:2", "calc:3", "calc:1.1", "calc:1.2", "calc:1.3"]
            records = {id: await resonate.promises.get(id) for id in ids}
            return {id: (r.tags["resonate:target"], r.value.data) for id, r in records.items()}

    promises = asyncio.run(scenario())
    assert promises["calc:1"] == ("poll://uni@exp/lhs", 3)  # 1 + 2
    assert promises["calc:2"] == ("poll://uni@exp/rhs", -1)  # 3 - 4
    assert promises["calc:3"] == ("local://any@ops", -3)  # 3 * -1
    assert promises["calc:1.1"] == ("poll://uni@exp/lhs", 1)
    assert promises["calc:1.2"] == ("poll://uni@exp/rhs", 2)
    assert promises["calc:1.3"] == ("local://any@ops", 3)


def test_the_same_id_returns_the_stored_result_without_running_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[int, int]:
        async with embedded() as (resonate, _):
            first = await resonate.run("same", "=", parse("(1 + 2) * 3")).result()
            ran = len(caplog.records)
            again = await resonate.run("same", "=", parse("(1 + 2) * 3")).result()
            assert len(caplog.records) == ran, "a step ran again"
            return first, again

    with caplog.at_level(logging.INFO, logger="resonator"):
        assert asyncio.run(scenario()) == (9, 9)
    operators = [r.getMessage() for r in caplog.records if ": +" in r.getMessage()]
    assert operators == ["embedded: + 1 2  [same:1.3]"]


@settings(max_examples=40, deadline=None)
@given(expressions)
def test_random_expressions_agree_with_the_oracle(expr: Expr) -> None:
    text = render(expr)
    assert asyncio.run(evaluate(text)) == [oracle(text)]
