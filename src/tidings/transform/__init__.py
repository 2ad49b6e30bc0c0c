"""JavaScript transformations: a tenant's ``function handler(webhook)`` reshapes, redirects
or cancels a delivery (Svix's shape; DESIGN.md, "Subscription options").

The engine is QuickJS (the optional extra ``tidings[transform]``) in a small pool of
processes (``engine.py`` says why; ``bench/transform.py`` measures it). Only this package
imports a JavaScript engine. Use::

    engine = TransformEngine(workers=2, time_limit=0.05)
    problem = await engine.compile_check(script)          # on save: None or the error
    outcome = await engine.run(tenant_id, script, webhook_for(url, envelope))
    # or, from the body already printed: webhook_text(url, event_type, body)
    match outcome:
        case Transformed(): ...  # send outcome.body to outcome.url
        case Cancelled(): ...    # record the delivery cancelled (reason "transformation")
        case TransformFailed(): ...  # fail the attempt; str(outcome) for the log
    await engine.close()
"""

from tidings.transform.engine import (
    MAX_SCRIPT_CHARS,
    MISSING_ENGINE,
    TransformEngine,
    engine_installed,
)
from tidings.transform.outcomes import (
    Cancelled,
    FailureKind,
    Transformed,
    TransformFailed,
    TransformOutcome,
    TransformUnavailable,
    checked_target,
    webhook_for,
    webhook_text,
)

__all__ = [
    "MAX_SCRIPT_CHARS",
    "MISSING_ENGINE",
    "Cancelled",
    "FailureKind",
    "TransformEngine",
    "TransformFailed",
    "TransformOutcome",
    "TransformUnavailable",
    "Transformed",
    "checked_target",
    "engine_installed",
    "webhook_for",
    "webhook_text",
]
