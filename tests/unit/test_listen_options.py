"""``tidings listen``'s subscription options, refused before any server is contacted."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tidings.cli import app
from tidings.devtools import Options
from tidings.domain.signatures import SignatureScheme


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--header", "no colon here"], "is not 'Name: value'"),
        (["--header", ": empty name"], "is not 'Name: value'"),
        (["--retry-policy", "{delays"], "not JSON"),
        (["--retry-policy", "[5, 30]"], "must be a JSON object"),
        (["--filter", "{payload"], "not JSON"),
        (["--filter", '"card"'], "must be a JSON object"),
        (["--signature-scheme", "md5"], "md5"),
        (["--transformation", "/nonexistent/handler.js"], "does not exist"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(
        app,
        ["listen", "--forward-to", "http://127.0.0.1:9/", "--api-key", "k", *args],
        env={"COLUMNS": "300"},  # one line per message in the usage box
    )
    assert result.exit_code == 2, result.output
    assert complaint in " ".join(result.output.split())


def test_options_become_the_subscription_fields() -> None:
    options = Options(
        SignatureScheme.HMAC_BODY,
        {"Authorization": "Bearer t"},
        {"delays": [5, 30]},
        {"payload.method": "card"},
        "function handler(webhook) { return webhook }",
    )
    assert options.subscription() == {
        "signatureScheme": "hmac-body",
        "headers": {"Authorization": "Bearer t"},
        "retryPolicy": {"delays": [5, 30]},
        "filter": {"payload.method": "card"},
        "transformation": "function handler(webhook) { return webhook }",
    }
    assert Options().subscription() == {"signatureScheme": "hmac"}
