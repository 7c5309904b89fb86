"""The one ``Reason`` vocabulary: the README's reason table, ``describe_failure`` and the code agree.

Also checks that the error tree drawn in :mod:`opsync.core.errors`' docstring is the real one.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from opsync.core import errors
from opsync.core.crd import API_VERSION, KIND
from opsync.core.desired import Owner
from opsync.core.errors import CONDITION_REASONS, EVENT_REASONS, FAILURE_REASONS, SUCCESS_REASONS, Reason
from opsync.sync.reconcile import Failure, Target, describe_failure

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONNECTIONS_DOC = ROOT / "docs" / "connections.md"
"""The multi-tenant how-to: its "Status and reasons" section lists the connection reasons."""
PACKAGE = ROOT / "operator" / "opsync"
TARGET = Target(Owner(API_VERSION, KIND, "db", "uid-db"), "ns", "db", "vaults/v/items/i")

# The kopf layer (but reporting.py) is being rewritten, and moved to ``Reason`` as part of that:
# empty this once it is.

# -- the enum itself -----------------------------------------------------------------------------


def test_every_reason_is_its_own_camel_case_string() -> None:
    for reason in Reason:
        assert reason.name == reason.value == str(reason) == f"{reason}"
        assert re.fullmatch(r"[A-Z][A-Za-z]+", reason.value)


def test_the_kinds_of_reason_partition_the_enum() -> None:
    assert set(Reason) == SUCCESS_REASONS | EVENT_REASONS | FAILURE_REASONS | CONDITION_REASONS
    assert not SUCCESS_REASONS & EVENT_REASONS
    assert not CONDITION_REASONS & (SUCCESS_REASONS | EVENT_REASONS)
    assert not FAILURE_REASONS & (SUCCESS_REASONS | EVENT_REASONS | CONDITION_REASONS)
    assert {reason for reason in Reason if reason.is_failure} == FAILURE_REASONS
    # The kopf layer posts these.
    for name in ("Synced", "SecretSynced", "SecretRenamed", "DriftRepaired", "MissingItemName"):
        assert Reason[name] in SUCCESS_REASONS | EVENT_REASONS


# -- the README ----------------------------------------------------------------------------------

_ROW = re.compile(r"^\|\s*(`[A-Za-z]+`(?:\s*,\s*`[A-Za-z]+`)*)\s*\|\s*(True|False)\s*\|(.*)\|\s*$")


def _section(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n#", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _status_section() -> str:
    """README's Status and Events section, and the connections how-to's reasons (the reasons of
    OnePasswordConnections and of items naming one)."""
    return (
        _section(README, "### Status and Events") + "\n" + _section(CONNECTIONS_DOC, "## Status and reasons")
    )


def _table() -> dict[str, set[str]]:
    """The reasons of the table, by their Ready column."""
    rows: dict[str, set[str]] = {"True": set(), "False": set()}
    for line in _status_section().splitlines():
        match = _ROW.match(line)
        if match:
            assert match.group(3).strip(), f"a reason row says nothing: {line}"
            rows[match.group(2)] |= set(re.findall(r"`([A-Za-z]+)`", match.group(1)))
    return rows


def test_the_table_is_found() -> None:
    table = _table()
    assert len(table["False"]) > 10 and table["True"]


def test_the_readme_table_lists_exactly_the_failure_reasons() -> None:
    documented = _table()["False"]
    values = {reason.value for reason in FAILURE_REASONS}
    assert not values - documented, (
        f"failure reasons missing from the README table: {sorted(values - documented)}"
    )
    assert not documented - values, f"README rows that are no failure reason: {sorted(documented - values)}"


def test_the_readme_table_lists_exactly_the_ready_reasons() -> None:
    assert _table()["True"] == {reason.value for reason in SUCCESS_REASONS}


def test_the_readme_names_every_event_reason() -> None:
    section = _status_section()
    named = EVENT_REASONS | SUCCESS_REASONS | CONDITION_REASONS
    missing = [reason.value for reason in named if f"`{reason}`" not in section]
    assert not missing, f"Event reasons the Status and Events section does not name: {missing}"


# -- describe_failure ----------------------------------------------------------------------------


def _error_classes() -> list[type[errors.OpsyncError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.OpsyncError) and cls.__module__ == errors.__name__
    ]


def _examples() -> list[BaseException]:
    found: list[BaseException] = []
    for cls in _error_classes():
        if issubclass(cls, errors.SpecError):
            found += [cls("bad", reason=reason) for reason in FAILURE_REASONS]
            found.append(cls("bad"))
        elif issubclass(cls, errors.KubeError):
            found += [cls("x"), cls("x", status=409), cls("x", status=500, retryable=True)]
        else:
            found.append(cls("x"))
    return [*found, RuntimeError("boom"), KeyError("k"), ValueError("v")]


@pytest.mark.parametrize("exc", _examples(), ids=lambda exc: f"{type(exc).__name__}-{exc}")
def test_every_failure_described_has_a_failure_reason(exc: BaseException) -> None:
    failure = describe_failure(exc, TARGET)
    assert isinstance(failure, Failure)
    assert isinstance(failure.reason, Reason) and failure.reason.is_failure
    assert failure.message


def test_describe_failure_names_a_reason_in_every_branch() -> None:
    """Statically: every ``Failure(...)`` it builds takes a ``Reason`` member, or a SpecError's."""
    source = inspect.getsource(describe_failure)
    calls = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Failure"
    ]
    assert len(calls) >= 10
    for call in calls:
        first = call.args[0]
        assert isinstance(first, ast.Attribute), ast.unparse(call)
        if isinstance(first.value, ast.Name) and first.value.id == "Reason":
            assert Reason[first.attr].is_failure, ast.unparse(call)
        else:
            assert ast.unparse(first) == "exc.reason", ast.unparse(call)


def test_every_failure_reason_can_reach_a_user() -> None:
    """No dead member: each failure reason is named somewhere in the code, outside the enum."""
    used: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent.name == "core":
            continue
        used |= set(re.findall(r"\bReason\.([A-Za-z]+)\b", path.read_text(encoding="utf-8")))
    # InvalidSpec is also SpecError's default reason.
    unused = {reason.value for reason in FAILURE_REASONS} - used - {Reason.InvalidSpec.value}
    assert not unused, f"failure reasons no code gives: {sorted(unused)}"


def test_no_reason_is_a_string_literal() -> None:
    """``reason=`` always takes a ``Reason`` (a literal would slip past the README check)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("tooling/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    value = keyword.value
                    if (
                        keyword.arg == "reason"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        found.append(f"{relative}:{node.lineno}: reason={value.value!r}")
    assert not found, "\n".join(found)


# -- the error tree in errors' docstring ---------------------------------------------------------

_TREE_LINE = re.compile(r"^(?P<lead>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)(?:\s{2,}.*)?$")


def _drawn_tree() -> dict[str, str | None]:
    """Each class the docstring draws, with the class drawn as its parent."""
    doc = errors.__doc__ or ""
    lines = doc[doc.index("    OpsyncError") :].split("\n\n", 1)[0].splitlines()
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in lines:
        match = _TREE_LINE.match(line)
        assert match, f"not a line of the tree: {line!r}"
        depth = (len(match.group("lead")) - 4) // 4
        assert depth <= len(stack), f"a level skipped at {line!r}"
        del stack[depth:]
        name = match.group("name")
        assert name not in parents, f"{name} drawn twice"
        parents[name] = stack[-1] if stack else None
        stack.append(name)
    return parents


def test_the_docstring_draws_every_error_class_under_its_base() -> None:
    drawn = _drawn_tree()
    defined = {
        cls.__name__: cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    }
    assert set(drawn) == set(defined), (
        f"not drawn: {sorted(set(defined) - set(drawn))}; drawn, not defined: {sorted(set(drawn) - set(defined))}"
    )
    for name, parent in drawn.items():
        (base,) = defined[name].__bases__
        assert base.__name__ == (parent or "Exception"), f"{name} is drawn under {parent}, derives {base}"
