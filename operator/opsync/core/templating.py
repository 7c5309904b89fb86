"""Render the Jinja2 templates of a OnePasswordItem over 1Password item data.

Why this module exists: ``spec.template`` lets users shape a Secret, for example
``stringData: {"config.yaml": "user: {{ item.fields.username }}"}``. Whoever may
create the custom resource writes the template, so a template is *untrusted
input*, while the data it renders is *secret*. :func:`render` therefore runs a
template in Jinja's immutable sandbox, within a fixed budget of work and
memory, and turns every failure into a :class:`TemplateError` that names the
template and line but never contains a secret value. It is pure: no I/O, no
state kept between calls.

What a template can use
    * The context the operator passes (for example ``item``), read-only. Files
      are :class:`Blob` values: ``file.text`` (UTF-8), ``file.base64`` and
      ``file|length`` (bytes).
    * Statements ``if``, ``for`` (with ``else``, ``loop.*`` and ``recursive``),
      ``set``, ``with``, ``macro``, ``call``, ``filter``, ``raw``, comments and
      whitespace control.
    * Globals ``range`` (at most 10,000 numbers) and ``dict``.
    * Jinja's built-in tests, and its built-in filters except ``random``
      (a Secret must not change on every sync) and ``urlize`` (HTML only).
      ``join`` and ``tojson`` are bounded rewrites: ``tojson`` gives plain JSON
      with sorted keys, is not HTML-escaped and takes an ``indent`` of at most 16.
    * Added filters: ``b64encode`` (text or file to base64), ``b64decode``
      (base64 to UTF-8 text), ``sha256`` (hex digest of text or file) and
      ``fromjson`` (parse a JSON string).
    * Methods of strings, lists and dicts that do not change them, such as
      ``split``, ``startswith``, ``replace``, ``format`` and ``get``.

What a template cannot do
    * Reach Python internals: attributes starting with ``_`` (``__class__``,
      ``__globals__``, ...) and other unsafe attributes are refused.
    * Change anything: ``append``, ``update``, ``pop``, ... are refused, and
      there is no ``namespace()`` and no ``{% do %}``.
    * Load other templates: ``include``, ``import``, ``extends`` and ``block``
      are refused.
    * Reach files, the network, the environment, the clock or randomness:
      nothing in the context or the globals leads there. The globals
      ``lipsum``, ``cycler``, ``joiner`` and ``namespace`` are gone.
    * Call ``encode``, ``translate`` or ``to_bytes``; use ``*`` widths in
      ``%`` formats or nested ``{}`` in ``format`` specs; ``sum`` anything but
      numbers; ``round`` to more than 1,000 digits; apply the tests ``odd``,
      ``even`` or ``divisibleby`` to anything but numbers (``%`` on a string
      formats it).
    * Exceed the budget of one render:

      - an output longer than the limit (default 262,144 characters);
      - a value it builds longer than the limit: every operator, ``~``, filter,
        call, literal and ``{% set %}`` block is checked, before computing it
        when it could grow (``"a" * n``, ``"%9999d"``, ``center``, ``indent``,
        ``replace``, ``join``, ``format``, ...). Item values may be longer: they
        pass through filters that do not grow them (``trim``, ``sha256``, ...);
      - strings built adding up to more than 64 times the limit;
      - numbers above 16,384 bits;
      - 100,000 calls of filters, functions, methods and macros;
      - 1,000,000 steps of loops and macros: each iteration or call costs the
        number of syntax nodes of the loop or macro;
      - 2 seconds, parsing included: the backstop for any work the limits
        above do not count. (Parsing itself cannot be interrupted: the length
        of a template should be bounded where it is written.)
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import re
import time
from base64 import b64decode, b64encode
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from string import Formatter
from types import TracebackType
from typing import Any, TypeVar

from jinja2 import TemplateError as JinjaError
from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import test_divisibleby, test_even, test_odd
from jinja2.utils import missing, pass_context, pass_environment
from jinja2.visitor import NodeTransformer

from opsync.core.errors import Reason, SpecError, shorten

DEFAULT_LIMIT = 256 * 1024
"""Default maximum characters of one rendered output, and of any value built on the way."""

MAX_RANGE = 10_000
"""Most numbers ``range()`` may produce."""

MAX_CALLS = 100_000
"""Most calls of filters, functions, methods and macros in one render."""

MAX_STEPS = 1_000_000
"""Most loop and macro steps in one render; an iteration or call costs the syntax nodes of its loop or macro."""

MAX_SECONDS = 2.0
"""Longest one render may take: the backstop for work no other limit counts."""

MAX_INT_BITS = 16_384
"""Largest number an operator may compute, in bits (about 4,900 digits)."""

MAX_ROUND_DIGITS = 1_000
"""Largest ``precision`` of the ``round`` filter."""

MAX_JSON_INDENT = 16
"""Largest ``indent`` of the ``tojson`` filter."""

BUILD_FACTOR = 64
"""All strings one render builds may hold at most this many times the limit in characters."""

_FILENAME = "<template>"
"""Filename of compiled templates: traceback frames with it are template lines."""

_FIELD_SLACK = 320
"""Characters a format field may add beyond its value and width: a float in fixed notation."""

_SMALL = 64
"""Characters assumed for the text of an object that is not data (a macro, a range, ...)."""

_REFUSED_METHODS = frozenset({"encode", "translate", "to_bytes"})
"""Methods of strings and numbers refused: they return bytes or grow without an easy bound."""

_REMOVED_FILTERS = frozenset({"random", "urlize"})

_MODULO_TESTS: dict[str, Callable[..., bool]] = {
    "odd": test_odd,
    "even": test_even,
    "divisibleby": test_divisibleby,
}

_DIGITS = re.compile(r"\d+")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_TYPE_NAMES = frozenset(
    {"str", "int", "float", "bool", "list", "dict", "tuple", "NoneType", "bytes", "Blob", "Undefined"}
    | {"dict object", "str object", "list object", "utf-8"}
)
_PERCENT_SPEC = re.compile(r"[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.?)", re.DOTALL)

T = TypeVar("T")


class TemplateError(SpecError):
    """A template could not be rendered. The message names the template and line, never a secret."""

    def __init__(self, where: str, line: int | None, problem: str) -> None:
        location = where if line is None else f"{where}: line {line}"
        super().__init__(f"{location}: {problem}", reason=Reason.TemplateError)
        self.where = where
        self.line = line
        self.problem = problem


class Blob:
    """A file's content in the template context: ``.text``, ``.base64`` and ``|length``, never raw bytes."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    @functools.cached_property
    def text(self) -> str:
        """The content decoded as UTF-8."""
        try:
            return self._content.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("file is not UTF-8 text; use .base64") from None

    @functools.cached_property
    def base64(self) -> str:
        """The content in standard base64."""
        return b64encode(self._content).decode("ascii")

    def __str__(self) -> str:
        return self.text

    def __len__(self) -> int:
        return len(self._content)

    def __repr__(self) -> str:
        return f"Blob({len(self._content)} bytes)"


def render(
    where: str,
    source: str,
    context: Mapping[str, Any],
    *,
    secrets: Iterable[str] = (),
    limit: int = DEFAULT_LIMIT,
) -> str:
    """Render the template ``source`` over ``context`` in the sandbox, within the budget.

    ``where`` names the template in messages (``"template.stringData.config.yaml"``).
    ``context`` holds plain data (dicts with string keys, lists, strings, numbers,
    booleans, None) and :class:`Blob` files. ``limit`` bounds the output, and any
    value built on the way, in characters. Every string in ``secrets`` (of three
    characters or more) is replaced by ``<redacted>`` in the error message.
    Raises :class:`TemplateError` on any failure.
    """
    try:
        return _render(where, source, context, _Budget(limit))
    except Exception as exc:
        line, problem = _line_of(exc), _problem_of(exc, source)
    redact = _redactor(secrets)
    raise TemplateError(redact(where), line, shorten(redact(problem)))


def _render(where: str, source: str, context: Mapping[str, Any], budget: _Budget) -> str:
    env = _Environment(budget)
    tree = _Instrument().visit(env.parse(source, name=where, filename=_FILENAME))
    code = env.compile(tree, name=where, filename=_FILENAME)
    template = env.template_class.from_code(env, code, env.make_globals(None))
    output: list[str] = []
    size = 0
    for chunk in template.generate(dict(context)):
        size += len(chunk)
        if size > budget.limit:
            raise _Refused(f"output exceeds {budget.limit} characters")
        budget.tick()
        output.append(chunk)
    return "".join(output)


def _line_of(exc: BaseException) -> int | None:
    """The template line of a failure: from a syntax error, or from the last template frame."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line = None
    frame: TracebackType | None = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == _FILENAME:
            line = frame.tb_lineno
        frame = frame.tb_next
    return line


def _problem_of(exc: BaseException, source: str) -> str:
    """What went wrong, for the status. A syntax error quotes only the template, and the
    budget's own messages quote nothing; any other message is shown only when everything it
    quotes is in the template (or is a type name): a template can turn a value into a name
    (``map(value | upper)`` → "No filter named 'HUNTER2'"), which redaction cannot recognise."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.message or "syntax error"
    if isinstance(exc, _Refused):
        return str(exc)
    name = type(exc).__name__
    text = str(exc) if isinstance(exc, JinjaError) else f"{name}: {exc}" if str(exc) else name
    if all(quoted in source or quoted in _TYPE_NAMES for quoted in _quoted(text)):
        return text
    return (
        f"{name} (its message is withheld: it quotes something that is not in the template, "
        "which may be an item value)"
    )


def _quoted(text: str) -> Iterator[str]:
    for match in _QUOTED.finditer(text):
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        if quoted:
            yield quoted


def _redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function replacing each secret (as is, or as Python quotes it) by ``<redacted>``, longest first."""
    forms = {form for secret in secrets if len(secret) >= 3 for form in (secret, repr(secret)[1:-1])}
    ordered = sorted(forms, key=len, reverse=True)

    def redact(text: str) -> str:
        for form in ordered:
            text = text.replace(form, "<redacted>")
        return text

    return redact


class _Refused(Exception):
    """The template asked for more than its budget, or for something not allowed."""


class _Budget:
    """What one render may still use. Every check raises :class:`_Refused`; nothing is ever given back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls = MAX_CALLS
        self.steps = MAX_STEPS
        self.chars = BUILD_FACTOR * limit
        self.deadline = time.monotonic() + MAX_SECONDS

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Refused(f"too much work: rendering took more than {MAX_SECONDS:g} seconds")

    def call(self) -> None:
        self.calls -= 1
        if self.calls < 0:
            raise _Refused(f"too much work: more than {MAX_CALLS} calls")
        self.tick()

    def work(self, steps: int) -> None:
        self.steps -= max(steps, 1)
        if self.steps < 0:
            raise _Refused(f"too much work: loops and macros took more than {MAX_STEPS} steps")
        self.tick()

    def fits(self, size: int) -> None:
        if size > self.limit:
            raise _Refused(f"a value would exceed {self.limit} characters")

    def charge(self, size: int) -> None:
        self.chars -= size
        if self.chars < 0:
            raise _Refused(f"too much work: built more than {BUILD_FACTOR * self.limit} characters")

    def build(self, size: int) -> None:
        self.fits(size)
        self.charge(size)

    def checked(self, value: T) -> T:
        """``value``, unless it is a structure beyond the limit made mostly of repeated references."""
        rendered, distinct = _measure(value)
        if rendered > self.limit and rendered > 2 * distinct:
            raise _Refused(f"a value would exceed {self.limit} characters")
        return value

    def produced(self, result: T, inputs: object) -> T:
        """Check and charge a value computed from ``inputs``.

        A string beyond the limit passes only if it is no bigger than its inputs (``item.fields.cert|trim``),
        so no chain of operations can grow data past the limit.
        """
        if isinstance(result, str):
            if len(result) > self.limit and len(result) > _size(inputs):
                raise _Refused(f"a value would exceed {self.limit} characters")
            self.charge(len(result))
        elif isinstance(result, (list, tuple, dict, set, frozenset)):
            self.checked(result)
        return result

    def collect(self, parts: Iterable[object], sep: str = "") -> list[object]:
        """The parts as a list, refused as soon as joining them with ``sep`` would exceed the limit."""
        items: list[object] = []
        size = 0
        for part in parts:
            size += _size(part) + (len(sep) if items else 0)
            self.fits(size)
            items.append(part)
        return items

    def join(self, parts: Iterable[object], sep: str = "") -> str:
        """Jinja's joining of output pieces (``~``, ``{% set %}`` blocks, macros), bounded."""
        text = sep.join(map(str, self.collect(parts, sep)))
        self.charge(len(text))
        return text

    def rendered(self, value: T) -> T:
        """Jinja's ``finalize``: an output expression's value, before it becomes a string."""
        if not isinstance(value, str):
            self.build(_size(value))
        return value


class _Undefined(StrictUndefined):
    """StrictUndefined whose errors never repeat a looked-up key or attribute: it may come from item data."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_obj is missing:  # a variable: its name is written in the template
            return super()._undefined_message
        kind = type(self._undefined_obj).__name__
        if self._undefined_exception is SecurityError:
            return f"access to that attribute of a {kind!r} object is not allowed"
        return f"{kind!r} object has no such attribute or item"


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox of one render, bound to its budget."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, budget: _Budget) -> None:
        super().__init__(
            undefined=_Undefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=budget.rendered,
        )
        self.budget = budget
        self.globals = {"range": _range, "dict": _dict}
        filters = {**self.filters, **_FILTERS}
        self.filters = {
            name: _guarded(budget, name, func)
            for name, func in filters.items()
            if name not in _REMOVED_FILTERS
        }
        self.filters.update(_internal_filters(budget))
        self.tests.update({name: _numbers_only(name, test) for name, test in _MODULO_TESTS.items()})

    def concat(self, parts: Iterable[str]) -> str:  # a class attribute in Jinja: "".join
        return self.budget.join(parts)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr in _REFUSED_METHODS and isinstance(obj, (str, int)):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.budget.fits(_binop_size(operator, left, right))
        return self.budget.produced(super().call_binop(context, operator, left, right), (left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.budget.call()
        owner = getattr(obj, "__self__", None)  # of a method: also str subclasses such as Markup
        if isinstance(owner, str):
            args = self._checked_str_method(owner, obj.__name__, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        return self.budget.produced(result, (owner, args, kwargs))

    def _checked_str_method(
        self, text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        """Refuse a string method call whose result would exceed the limit; ``join`` gets a bounded list."""
        if name == "join" and len(args) == 1:
            return (self.budget.collect(args[0], text),)
        size_of = _METHOD_SIZES.get(name)
        if size_of is not None:
            self.budget.fits(size_of(text, *args, **kwargs))
        return args

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        sandboxed = super().wrap_str_format(value)
        if sandboxed is None:
            return None
        budget, fmt = self.budget, value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            budget.fits(_format_size(fmt, _size((args, kwargs))))
            return sandboxed(*args, **kwargs)

        return checked


class _Instrument(NodeTransformer):
    """Rewrite a parsed template so that loops, macros, ``~`` and literals report to the budget.

    The calls it inserts are internal filters (``<steps>``, ``<join>``, ``<value>``): a template
    cannot name them, so it cannot shadow them, and calling them by name (``map("<steps>")``)
    only spends more of the budget. A loop iteration, or a macro call, costs the number of syntax
    nodes of the loop or macro: counted on the way, so that nesting costs no extra passes.
    """

    def __init__(self) -> None:
        self.visited = 0

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> nodes.Node:
        self.visited += 1
        return super().generic_visit(node, *args, **kwargs)

    def _charge_body(self, node: nodes.For | nodes.Macro | nodes.CallBlock) -> None:
        """Visit ``node``, and make each run of its body spend the node's size."""
        before = self.visited
        self.generic_visit(node)
        weight = self.visited - before
        node.body.insert(
            0, nodes.ExprStmt(_internal("<steps>", nodes.Const(weight), node), lineno=node.lineno)
        )

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self._charge_body(node)
        if node.test is not None:
            node.test = nodes.And(_internal("<steps>", nodes.Const(1), node), node.test, lineno=node.lineno)
        return node

    def visit_Macro(self, node: nodes.Macro) -> nodes.Node:
        self._charge_body(node)
        return node

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.Node:
        self._charge_body(node)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _internal("<join>", nodes.Tuple(node.nodes, "load"), node)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _internal("<value>", node, node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _internal("<value>", node, node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return node if node.ctx != "load" else _internal("<value>", node, node)

    def visit_Extends(self, node: nodes.Extends) -> nodes.Node:
        raise _unsupported("extends", node)

    def visit_Include(self, node: nodes.Include) -> nodes.Node:
        raise _unsupported("include", node)

    def visit_Import(self, node: nodes.Import) -> nodes.Node:
        raise _unsupported("import", node)

    def visit_FromImport(self, node: nodes.FromImport) -> nodes.Node:
        raise _unsupported("from ... import", node)

    def visit_Block(self, node: nodes.Block) -> nodes.Node:
        raise _unsupported("block", node)


def _internal(name: str, arg: nodes.Expr, at: nodes.Node) -> nodes.Filter:
    """A call of the internal filter ``name`` on ``arg``, placed on the line of ``at``."""
    call = nodes.Filter(arg, name, [], [], None, None)
    call.set_lineno(at.lineno)
    return call


def _unsupported(tag: str, node: nodes.Node) -> TemplateSyntaxError:
    return TemplateSyntaxError(
        f"{{% {tag} %}} is not supported: a template cannot use other templates", node.lineno
    )


def _internal_filters(budget: _Budget) -> dict[str, Callable[..., Any]]:
    """The filters :class:`_Instrument` inserts. ``pass_context`` keeps Jinja from running them at compile time."""

    @pass_context
    def steps(context: Context, weight: int) -> bool:
        budget.work(weight)
        return True

    @pass_context
    def join(context: Context, parts: Iterable[object]) -> str:
        return budget.join(parts)

    @pass_context
    def value(context: Context, literal: T) -> T:
        return budget.checked(literal)

    return {"<steps>": steps, "<join>": join, "<value>": value}


def _guarded(budget: _Budget, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a filter that counts as a call, is refused when it would grow past the limit, and is checked."""
    size_of = _FILTER_SIZES.get(name)
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0  # the context or environment Jinja passes first

    @functools.wraps(func)  # copies ``jinja_pass_arg`` too: it lives in the function's __dict__
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget.call()
        if size_of is not None:
            budget.fits(size_of(*args[skip:], **kwargs))
        return budget.produced(func(*args, **kwargs), (args[skip:], kwargs))

    return guarded


def _numbers_only(name: str, test: Callable[..., Any]) -> Callable[..., Any]:
    """A test computing ``value % n``: for a string that is printf formatting, so only numbers may pass."""

    @functools.wraps(test)
    def checked(value: object, *args: Any) -> Any:
        if not isinstance(value, (int, float)):
            raise TypeError(f"the {name} test needs a number, not {type(value).__name__}")
        return test(value, *args)

    return checked


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _Refused(f"range() may produce at most {MAX_RANGE} numbers")
    return numbers


def _dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    """The ``dict`` global: a function, as the type would let ``dict.update(item, ...)`` change the context."""
    return dict(*args, **kwargs)


# Sizes: estimates of how many characters a value renders to, computed before building it.


def _measure(value: object) -> tuple[int, int]:
    """(rendered, distinct): estimated ``len(str(value))``, and the same counting each shared object once."""
    memo: dict[int, tuple[object, int]] = {}  # keeps the objects alive, so that ids stay unique
    distinct = 0

    def walk(item: object) -> int:
        nonlocal distinct
        known = memo.get(id(item))
        if known is not None:
            return known[1]
        own, children = _parts(item)
        distinct += own
        size = own + sum(walk(child) for child in children)
        memo[id(item)] = (item, size)
        return size

    return walk(value), distinct


def _size(value: object) -> int:
    """Estimated ``len(str(value))``."""
    return len(value) if isinstance(value, str) else _measure(value)[0]


def _parts(value: object) -> tuple[int, list[object]]:
    """The characters ``value`` adds to its text by itself, and the values inside it."""
    if isinstance(value, (str, Blob)):
        return len(value), []
    if isinstance(value, (bool, float)) or value is None:
        return len(repr(value)), []
    if isinstance(value, int):
        return value.bit_length() // 3 + 2, []
    if isinstance(value, Mapping):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
        children = list(value)
    else:
        return _SMALL, []
    quoted = sum(2 for child in children if isinstance(child, str))
    return 2 + 2 * len(children) + quoted, children


def _int_bits(operator: str, left: int, right: int) -> int:
    """Bits of the result of an operator on two integers, estimated without computing it."""
    if operator == "*":
        return left.bit_length() + right.bit_length()
    if operator == "**" and right > 0 and abs(left) > 1:
        return left.bit_length() * right
    return max(left.bit_length(), right.bit_length()) + 1


def _binop_size(operator: str, left: Any, right: Any) -> int:
    """Characters of ``left <operator> right``, estimated before computing it."""
    if isinstance(left, int) and isinstance(right, int):
        if _int_bits(operator, left, right) > MAX_INT_BITS:
            raise _Refused(f"a number would exceed {MAX_INT_BITS} bits")
        return 0
    sequences = (str, list, tuple)
    if operator == "%" and isinstance(left, str):
        return _percent_size(left, right)
    if operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        return _size(left) + _size(right)
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, sequences) and isinstance(times, int):
                return _size(sequence) * max(times, 0)
    return 0


def _percent_fields(fmt: str) -> Iterator[tuple[int, int]]:
    """Width and precision of each conversion of a printf-style format, as Python reads it."""
    start = fmt.find("%")
    while start >= 0:
        match = _PERCENT_SPEC.match(fmt, _after_key(fmt, start + 1))
        if match is None:
            return
        width, precision, kind = match.groups()
        if "*" in (width, precision):
            raise _Refused("'*' widths and precisions are not supported in % formats")
        if kind != "%":
            yield int(width or 0), int(precision or 0)
        start = fmt.find("%", match.end())


def _after_key(fmt: str, index: int) -> int:
    """Where the conversion goes on after a ``(key)`` at ``index``; Python balances its parentheses."""
    if not fmt.startswith("(", index):
        return index
    depth = 0
    for position in range(index, len(fmt)):
        depth += (fmt[position] == "(") - (fmt[position] == ")")
        if depth == 0:
            return position + 1
    return len(fmt)


def _percent_size(fmt: str, values: object) -> int:
    """Characters of ``fmt % values``: each field may hold all of the values, padded."""
    value_size = _size(values)
    return len(fmt) + sum(
        width + precision + value_size + _FIELD_SLACK for width, precision in _percent_fields(fmt)
    )


def _format_size(fmt: str, value_size: int) -> int:
    """Characters of ``fmt.format(...)`` whose arguments render to ``value_size`` characters."""
    size = 0
    for literal, field, spec, _ in Formatter().parse(fmt):
        size += len(literal)
        if field is None:
            continue
        if "{" in (spec or ""):
            raise _Refused("nested {} in a format spec are not supported")
        size += value_size + _FIELD_SLACK + sum(map(int, _DIGITS.findall(spec or "")))
    return size


def _replace_size(text: str, old: str, new: str, count: int = -1) -> int:
    hits = text.count(old)
    if count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _padded_size(text: str, width: int, *_: object) -> int:
    return max(len(text), width)


def _expanded_size(text: str, tabsize: int = 8) -> int:
    return len(text) + text.count("\t") * max(tabsize, 0)


_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "center": _padded_size,
    "ljust": _padded_size,
    "rjust": _padded_size,
    "zfill": _padded_size,
    "expandtabs": _expanded_size,
    "replace": _replace_size,
}
"""Result sizes of the string methods that can grow a string (``join`` and ``format`` apart)."""


def _center_filter_size(value: object, width: int = 80) -> int:
    return max(_size(value), width)


def _replace_filter_size(value: object, old: object, new: object, count: int | None = None) -> int:
    return _replace_size(str(value), str(old), str(new), -1 if count is None else count)


def _format_filter_size(value: object, *args: object, **kwargs: object) -> int:
    return _percent_size(str(value), kwargs or args)


def _indent_size(value: object, width: int | str = 4, first: bool = False, blank: bool = False) -> int:
    text = str(value)
    pad = len(width) if isinstance(width, str) else max(width, 0)
    return len(text) + (len(text.splitlines()) + 2) * (pad + 1)


def _wordwrap_size(
    value: object,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> int:
    """Each paragraph wraps into at most ``2 * len / width + 1`` lines (a line ends only when the
    next word does not fit), and a separator goes between lines and between paragraphs."""
    text = str(value)
    separators = 2 * len(text) // max(width, 1) + 2 * len(text.splitlines())
    return len(text) + separators * len("\n" if wrapstring is None else wrapstring)


def _batch_size(value: object, linecount: int, fill_with: object = None) -> int:
    return 0 if fill_with is None else linecount * (_size(fill_with) + 4)


def _slice_size(value: object, slices: int, fill_with: object = None) -> int:
    return slices * (4 + (0 if fill_with is None else _size(fill_with)))


def _round_size(value: object, precision: int = 0, method: str = "common") -> int:
    if abs(precision) > MAX_ROUND_DIGITS:  # Python computes 10 ** abs(precision) for some of them
        raise _Refused(f"round: precision may be at most {MAX_ROUND_DIGITS} digits")
    return 0


def _sum_size(iterable: object, attribute: object = None, start: object = 0) -> int:
    if not isinstance(start, (int, float)):  # adding lists one by one takes quadratic time
        raise _Refused("sum adds numbers only")
    return 0


_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "batch": _batch_size,
    "center": _center_filter_size,
    "format": _format_filter_size,
    "indent": _indent_size,
    "replace": _replace_filter_size,
    "round": _round_size,
    "slice": _slice_size,
    "sum": _sum_size,
    "wordwrap": _wordwrap_size,
}
"""Checks of the filters that could grow their input or compute too much, by the filters' own parameters:
each returns the characters the result may have, or raises."""


# Filters added or replaced.


def _bytes_of(value: object) -> bytes:
    if isinstance(value, Blob):
        return value._content
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected text or a file, not {type(value).__name__}")


def _b64encode(value: str | Blob) -> str:
    return b64encode(_bytes_of(value)).decode("ascii")


def _b64decode(value: str | Blob) -> str:
    try:
        data = b64decode(_bytes_of(value), validate=True)
    except binascii.Error:
        raise ValueError("b64decode: the value is not valid base64") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("b64decode: the decoded value is not UTF-8 text") from None


def _sha256(value: str | Blob) -> str:
    return hashlib.sha256(_bytes_of(value)).hexdigest()


def _fromjson(value: str | Blob) -> Any:
    text = value.text if isinstance(value, Blob) else value
    if not isinstance(text, str):
        raise TypeError(f"fromjson: expected text or a file, not {type(text).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # its message is safe; its ``doc`` is the secret text
        raise ValueError(
            f"fromjson: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
        ) from None


@pass_environment
def _join(
    environment: _Environment, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    if attribute is not None:
        value = map(make_attrgetter(environment, attribute), value)
    return environment.budget.join(value, str(d))


@pass_environment
def _tojson(environment: _Environment, value: Any, indent: int | str | None = None) -> str:
    width = len(indent) if isinstance(indent, str) else indent or 0
    if width > MAX_JSON_INDENT:
        raise _Refused(f"tojson: indent may be at most {MAX_JSON_INDENT}")
    encoder = json.JSONEncoder(indent=indent, sort_keys=True)
    return environment.budget.join(encoder.iterencode(value))


_FILTERS: dict[str, Callable[..., Any]] = {
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "sha256": _sha256,
    "fromjson": _fromjson,
    "join": _join,
    "tojson": _tojson,
}
