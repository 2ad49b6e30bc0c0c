"""OpenTelemetry tracing (the optional extra ``tidings[otel]``): is it on, and if so how.

Tracing is **on** when the OpenTelemetry SDK is installed and the environment asks for it
with the standard variables:

* ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (spans
  go there over OTLP/HTTP, protobuf), or
* ``OTEL_TRACES_EXPORTER`` names an exporter: ``otlp`` or ``console`` (``none`` is off).

``OTEL_SDK_DISABLED=true`` turns it off whatever else is set. Without an endpoint and
without ``OTEL_TRACES_EXPORTER`` it is off: the SDK's own default (OTLP to
``localhost:4318``) would make every tidings installation log export errors. The rest of
the ``OTEL_*`` variables (``OTEL_SERVICE_NAME``, default ``tidings``;
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_BSP_*``, ...) are read by the SDK itself.

When tracing is off :func:`from_environment` returns None, nothing of OpenTelemetry is
imported, and every caller's hot path pays one ``is None`` test. The SDK glue itself is
in :mod:`tidings.tracing.sdk`, imported only when tracing is on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from tidings.tracing.sdk import Tracing

__all__ = ["Tracing", "exporters_wanted", "from_environment", "sdk_installed"]

log = structlog.get_logger("tidings.tracing")

KNOWN_EXPORTERS = ("otlp", "console")


def sdk_installed() -> bool:
    """The ``otel`` extra is installed (the SDK and the OTLP/HTTP exporter); found without
    importing the SDK (``find_spec`` imports a name's parents: here the API, which FastAPI
    imports anyway, and namespace packages)."""
    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
        )
    except ModuleNotFoundError:  # a parent package is missing
        return False


def exporters_wanted(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the environment asks for; empty means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        wanted = tuple(dict.fromkeys(n.strip() for n in named.split(",") if n.strip()))
        if "none" in wanted:
            return ()
        unknown = [n for n in wanted if n not in KNOWN_EXPORTERS]
        if unknown:
            log.warning("tracing_exporter_unknown", exporters=unknown, known=KNOWN_EXPORTERS)
        return tuple(n for n in wanted if n in KNOWN_EXPORTERS)
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ):
        return ("otlp",)
    return ()


def from_environment(environ: Mapping[str, str]) -> Tracing | None:
    """Tracing as the ``OTEL_*`` variables ask, or None (off, or the extra is missing)."""
    exporters = exporters_wanted(environ)
    if not exporters:
        return None
    if not sdk_installed():
        log.warning(
            "tracing_unavailable",
            hint="OTEL_* asks for traces: install tidings[otel] (the OpenTelemetry SDK)",
        )
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in exporters and protocol.strip() != "http/protobuf":
        log.warning("tracing_protocol_unsupported", protocol=protocol, supported="http/protobuf")
        return None
    from tidings.tracing.sdk import Tracing

    return Tracing.from_environment(exporters)
