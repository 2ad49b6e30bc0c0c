"""The verification snippets (``tidings/portal/snippets``): the names the portal reads, and
shipped in the wheel. The e2e tests (test_interop_snippets.py) run each against real
deliveries."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from tests.support.snippets import SCHEMES, python_verifier, snippet_path

ROOT = Path(__file__).parents[2]


def test_one_snippet_per_scheme_and_language_and_nothing_else() -> None:
    expected = {f"{s}.node.js" for s in SCHEMES} | {f"{s}.python.py" for s in SCHEMES}
    directory = snippet_path("hmac", "node").parent
    assert {p.name for p in directory.iterdir() if p.name != "__pycache__"} == expected
    for scheme in SCHEMES:
        assert "function verifySignature(" in snippet_path(scheme, "node").read_text()
        assert callable(python_verifier(scheme))


def test_the_wheel_ships_them() -> None:
    """setuptools' package-data decides what lands in the wheel beside the modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["tidings"]
    package = ROOT / "src" / "tidings"
    for scheme in SCHEMES:
        for language in ("node", "python"):
            relative = snippet_path(scheme, language).relative_to(package.resolve()).as_posix()
            assert any(fnmatch.fnmatch(relative, glob) for glob in globs), relative
