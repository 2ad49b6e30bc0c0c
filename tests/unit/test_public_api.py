"""The embedding API is exactly ``tidings.__all__``: the names type checkers see, the
names imported on first use, each one documented; and importing ``tidings`` alone does not
load the server (receivers and clients import it too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tidings


def type_checking_imports() -> dict[str, str]:
    """Each name ``tidings/__init__.py`` imports under ``if TYPE_CHECKING:``, and from where."""
    tree = ast.parse(Path(tidings.__file__).read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    return {
        alias.name: str(statement.module)
        for statement in block.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }


def test_type_checkers_see_each_name_where_it_is_imported_on_first_use() -> None:
    assert type_checking_imports() == tidings._HOMES


def test_all_is_the_embedding_api() -> None:
    assert set(tidings.__all__) == {*tidings._HOMES, "__version__"}
    assert sorted(tidings.__all__) == tidings.__all__


@pytest.mark.parametrize("name", tidings.__all__)
def test_every_public_name_resolves_and_is_documented(name: str) -> None:
    value = getattr(tidings, name)
    assert value is not None
    assert name in dir(tidings)
    if callable(value):
        assert value.__doc__, f"tidings.{name} needs a docstring"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Store'"):
        _ = tidings.Store


def test_importing_tidings_loads_no_server_code() -> None:
    probe = (
        "import sys, tidings, tidings.receiver; "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'aiohttp') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
