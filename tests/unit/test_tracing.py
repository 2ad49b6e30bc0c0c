"""When tracing is on, and that tidings runs without OpenTelemetry (the extra is optional)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tidings.tracing import exporters_wanted, from_environment, sdk_installed
from tidings.tracing.sdk import Tracing, context_of

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console,otlp"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, ()),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ()),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "console"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, ()),
    ],
)
def test_the_environment_decides(environ: dict[str, str], wanted: tuple[str, ...]) -> None:
    assert exporters_wanted(environ) == wanted


def test_off_is_none_and_on_is_a_provider_of_our_own() -> None:
    assert sdk_installed()
    assert from_environment({}) is None
    tracing = from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT})
    assert tracing is not None
    try:
        assert isinstance(tracing.provider, TracerProvider)
        assert tracing.provider.resource.attributes["service.name"] == "tidings"
    finally:
        tracing.shutdown()


def test_only_otlp_over_http_is_offered() -> None:
    """The extra installs the OTLP/HTTP exporter only; gRPC is refused, not half-done."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert from_environment(environ) is None


def test_stored_contexts_are_checked() -> None:
    assert context_of(None) is None
    assert context_of("") is None
    assert context_of("not a traceparent") is None
    assert context_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
    assert context_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") is not None


def test_a_span_that_raises_keeps_only_the_error_type() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    with pytest.raises(ValueError), tracing.span("tidings.emit", {}):
        raise ValueError("the payload's secret-ish value 12345678901234567890")
    [span] = exporter.get_finished_spans()
    assert span.status.description == "ValueError"
    assert (span.attributes or {})["error.type"] == "ValueError"
    assert span.events == ()  # no exception event: its message could quote a payload


SCRIPT = """
import sys
{block}
import asyncio, os
from cryptography.fernet import Fernet
from tidings.config import Settings
from tidings.service import Tidings
import tidings.app, tidings.cli, tidings.dispatcher.worker
from tidings import tracing

assert tracing.sdk_installed() is {installed}
os.environ.update({environ!r})

async def main():
    settings = Settings(
        database_url="sqlite:///" + sys.argv[1], data_dir=sys.argv[2],
        env="development", encryption_key=Fernet.generate_key().decode())
    t = Tidings.from_settings(settings)
    assert (t.tracing is not None) is {traced}, t.tracing
    await t.store.migrate()
    tenant = await t.store.keys.ensure_tenant("acme")
    event, created = await t.emit(tenant.id, "client.created", {{"a": 1}})
    assert created and (event.trace_context is not None) is {traced}
    tidings.app.create_app(t, run_dispatcher=False)
    await t.close()

asyncio.run(main())
assert (sys.modules.get("opentelemetry.sdk") is not None) is {traced}
print("ran")
"""


@pytest.mark.parametrize(
    ("block", "installed", "environ", "traced"),
    [
        pytest.param(
            "sys.modules['opentelemetry.sdk'] = sys.modules['opentelemetry.exporter'] = None",
            False,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
            False,
            id="without the extra, asked for",
        ),
        pytest.param("", True, {}, False, id="with it, not asked for"),
        pytest.param("", True, {"OTEL_TRACES_EXPORTER": "console"}, True, id="with it, asked"),
    ],
)
def test_tidings_runs_with_or_without_the_extra(
    tmp_path: Path, block: str, installed: bool, environ: dict[str, str], traced: bool
) -> None:
    """A fresh interpreter (what gets imported is the point). ``None`` in ``sys.modules``
    makes every import of the SDK and the exporters fail, as if the extra were not
    installed (the OpenTelemetry *API* is FastAPI's own dependency): tidings imports,
    emits and builds its app all the same, untraced. Not asked for, the SDK is not even
    imported."""
    script = SCRIPT.format(block=block, installed=installed, environ=environ, traced=traced)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TIDINGS_"))}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path / "t.db"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ran")
    if not installed:
        assert "tracing_unavailable" in done.stdout + done.stderr
