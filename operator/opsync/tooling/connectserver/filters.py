"""The SCIM filter language of ``?filter=`` on the vault and item lists.

Why this module exists: every official client looks vaults and items up by
name through ``?filter=title eq "..."`` (``name eq`` from the Python SDK, ``co``
from the JS SDK, ``or`` seen against real servers), so the local server needs a
real parser rather than a regular expression. Grammar (RFC 7644 section 3.4.2.2
subset, keywords case-insensitive)::

    filter     := andExpr ( "or" andExpr )*
    andExpr    := notExpr ( "and" notExpr )*
    notExpr    := [ "not" ] ( "(" filter ")" | comparison )
    comparison := attr "pr" | attr op value
    op         := eq | ne | co | sw | ew | gt | ge | lt | le
    value      := JSON string ("..." with \\" \\\\ \\uXXXX escapes) | true | false | null | number

String comparisons ignore case (Unicode case folding, NFC) unless asked not to.
Official clients do not escape quotes inside titles, so a single ``title|name eq
"..."`` comparison also matches the text between the outer quotes taken
literally (``title eq "a"b"`` finds the item titled ``a"b``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Value = str | bool | float | None
Attributes = Mapping[str, Sequence[str | bool]]
"""Attribute name (lower-case) → its values; multi-valued attributes (tags) have several."""

OPERATORS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
_KEYWORDS = frozenset({"and", "or", "not", "pr"}) | OPERATORS
_SIMPLE = re.compile(r"^\s*(title|name)\s+eq\s+\"(.*)\"\s*$", re.IGNORECASE | re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<paren>[()])
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![\w.])
      | (?P<word>[A-Za-z_][\w.$-]*)
    )""",
    re.VERBOSE | re.DOTALL,
)


class FilterError(ValueError):
    """The filter cannot be parsed or names an unknown attribute."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    value: Value = None


@dataclass(frozen=True)
class Comparison:
    attribute: str
    operator: str
    values: tuple[Value, ...]
    """Candidate values: usually one; two when a quote-unescaped reading is also possible."""


@dataclass(frozen=True)
class Present:
    attribute: str


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Comparison | Present | Not | And | Or


@dataclass(frozen=True)
class Filter:
    """A compiled filter; ``matches`` evaluates it against one resource's attributes."""

    root: Node | None

    def matches(self, attributes: Attributes, *, case_sensitive: bool = False) -> bool:
        if self.root is None:
            return True
        fold: Callable[[str], str] = _nfc if case_sensitive else _casefold
        return _evaluate(self.root, attributes, fold)


def parse(text: str | None, attributes: frozenset[str]) -> Filter:
    """Compile ``text``; ``attributes`` are the attribute names allowed (lower-case)."""
    if text is None or not text.strip():
        return Filter(None)
    simple = _SIMPLE.match(text)
    try:
        root = _Parser(_tokenize(text)).parse()
    except FilterError:
        if simple is None:
            raise
        root = Comparison(simple.group(1).lower(), "eq", (simple.group(2),))
    else:
        if simple is not None and isinstance(root, Comparison) and root.values != (simple.group(2),):
            root = Comparison(root.attribute, root.operator, (*root.values, simple.group(2)))
    _check_attributes(root, attributes)
    return Filter(root)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise FilterError(f"unexpected character at position {position + 1}")
        position = match.end()
        if match.group("paren"):
            tokens.append(_Token("paren", match.group("paren")))
        elif match.group("string"):
            raw = match.group("string")
            try:
                decoded = json.loads(raw, strict=False)
            except ValueError:
                raise FilterError(
                    f"invalid escape in the string at position {match.start('string') + 1}"
                ) from None
            tokens.append(_Token("value", raw, decoded))
        elif match.group("number"):
            tokens.append(_Token("value", match.group("number"), float(match.group("number"))))
        else:
            word = match.group("word")
            lowered = word.lower()
            if lowered in {"true", "false"}:
                tokens.append(_Token("value", word, lowered == "true"))
            elif lowered == "null":
                tokens.append(_Token("value", word, None))
            else:
                tokens.append(_Token("keyword" if lowered in _KEYWORDS else "attribute", lowered))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0

    def parse(self) -> Node:
        if not self._tokens:
            raise FilterError("empty filter")
        node = self._or()
        if self._peek() is not None:
            raise FilterError("unexpected text after the end of the expression")
        return node

    def _peek(self) -> _Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            raise FilterError(f"filter ends early: expected {expected}")
        self._index += 1
        return token

    def _accept(self, keyword: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "keyword" and token.text == keyword:
            self._index += 1
            return True
        return False

    def _or(self) -> Node:
        operands = [self._and()]
        while self._accept("or"):
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and(self) -> Node:
        operands = [self._not()]
        while self._accept("and"):
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _not(self) -> Node:
        if self._accept("not"):
            return Not(self._primary())
        return self._primary()

    def _primary(self) -> Node:
        token = self._next("an attribute or '('")
        if token.kind == "paren" and token.text == "(":
            node = self._or()
            closing = self._next("')'")
            if closing.kind != "paren" or closing.text != ")":
                raise FilterError("expected ')'")
            return node
        if token.kind != "attribute":
            raise FilterError("expected an attribute name")
        operator = self._next("an operator")
        if operator.kind != "keyword" or operator.text not in OPERATORS | {"pr"}:
            raise FilterError("expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)")
        if operator.text == "pr":
            return Present(token.text)
        value = self._next("a value")
        if value.kind != "value":
            raise FilterError('expected a value ("text", true, false, null or a number)')
        return Comparison(token.text, operator.text, (value.value,))


def _check_attributes(node: Node, allowed: frozenset[str]) -> None:
    if isinstance(node, Comparison | Present):
        if node.attribute not in allowed:
            raise FilterError(
                f"unknown attribute {node.attribute!r}; expected one of {', '.join(sorted(allowed))}"
            )
    elif isinstance(node, Not):
        _check_attributes(node.operand, allowed)
    else:
        for operand in node.operands:
            _check_attributes(operand, allowed)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _casefold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _evaluate(node: Node, attributes: Attributes, fold: Callable[[str], str]) -> bool:
    if isinstance(node, Or):
        return any(_evaluate(operand, attributes, fold) for operand in node.operands)
    if isinstance(node, And):
        return all(_evaluate(operand, attributes, fold) for operand in node.operands)
    if isinstance(node, Not):
        return not _evaluate(node.operand, attributes, fold)
    present = [value for value in attributes.get(node.attribute, ()) if value not in ("", None)]
    if isinstance(node, Present):
        return bool(present)
    if node.operator == "ne":
        return not _evaluate(Comparison(node.attribute, "eq", node.values), attributes, fold)
    return any(
        _compare(actual, node.operator, expected, fold) for actual in present for expected in node.values
    ) or (node.operator == "eq" and None in node.values and not present)


def _compare(actual: str | bool, operator: str, expected: Value, fold: Callable[[str], str]) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return operator == "eq" and actual == expected
    if not isinstance(expected, str):
        return False
    left, right = fold(actual), fold(expected)
    if operator == "eq":
        return left == right
    if operator == "co":
        return right in left
    if operator == "sw":
        return left.startswith(right)
    if operator == "ew":
        return left.endswith(right)
    if operator == "gt":
        return left > right
    if operator == "ge":
        return left >= right
    if operator == "lt":
        return left < right
    if operator == "le":
        return left <= right
    return False
