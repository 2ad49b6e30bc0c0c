"""tidings.receiver.flask beyond what every adapter answers (test_receiver_adapters.py)."""

from __future__ import annotations

import flask

from tests.unit.test_receiver_support import SECRET, InlineExecutor, envelope, signed
from tidings.receiver.flask import webhook_view


def test_handler_runs_in_an_app_context() -> None:
    seen: list[str] = []
    app = flask.Flask("ctx_app")
    view = webhook_view(
        SECRET, lambda e: seen.append(flask.current_app.name), executor=InlineExecutor()
    )
    app.add_url_rule("/hook", view_func=view, methods=["POST"])
    body = envelope()
    assert app.test_client().post("/hook", data=body, headers=signed(body)).status_code == 202
    assert seen == ["ctx_app"]
