"""The verification snippets the portal shows (``tidings/portal/snippets``), loaded for tests
exactly as shipped: a Python snippet's ``verify_signature``, a Node snippet's path."""

from __future__ import annotations

import runpy
from collections.abc import Callable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Literal, cast

Scheme = Literal["hmac", "ed25519", "hmac-body", "rsa-sha256"]
SCHEMES: tuple[Scheme, ...] = ("hmac", "ed25519", "hmac-body", "rsa-sha256")
LANGUAGES = {"node": "js", "python": "py"}


def snippet_path(scheme: Scheme, language: Literal["node", "python"]) -> Path:
    name = f"{scheme}.{language}.{LANGUAGES[language]}"
    resource = files("tidings.portal").joinpath("snippets", name)
    with as_file(resource) as path:  # a real file already: the package is not zipped
        assert path.is_file(), path
        return path


def python_verifier(scheme: Scheme) -> Callable[..., bool]:
    """The snippet's ``verify_signature``, run from the file as a user would paste it."""
    namespace = runpy.run_path(str(snippet_path(scheme, "python")))
    return cast(Callable[..., bool], namespace["verify_signature"])
