"""What a transformation run ends in, and the webhook object scripts see (Svix's shape).

A script's handler gets ``{method: "POST", url, eventType, payload, cancel: false}``,
where ``payload`` is the envelope that would be sent, and returns it, changed. Its answer
leaves the sandbox as JSON text and is judged here, in the parent process:

* ``cancel: true`` → :class:`Cancelled` (the rest is not looked at: nothing is sent);
* otherwise ``method`` must still be ``"POST"`` (tidings sends every webhook with POST:
  the method is read-only, and Svix too refuses a method it cannot send), ``url`` a string
  and ``payload`` a JSON object or array → :class:`Transformed`; ``eventType`` is for the
  script to read, and a change to it is ignored;
* anything else, and a script that throws, loops or runs out of memory, →
  :class:`TransformFailed`, whose ``str()`` is the text for the delivery log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from tidings.domain.js_json import compact_json

FailureKind = Literal["error", "timeout", "memory"]
METHOD = "POST"


@dataclass(frozen=True)
class Transformed:
    """Send this: ``payload`` is the new body (what is signed), ``url`` the target (which
    must pass the URL checks and the SSRF guard again if the script changed it)."""

    webhook: dict[str, Any]

    @property
    def url(self) -> str:
        url: str = self.webhook["url"]
        return url

    @property
    def payload(self) -> Any:
        return self.webhook["payload"]

    @cached_property
    def body(self) -> str:
        """The payload as JavaScript's ``JSON.stringify`` prints it: the bytes to sign."""
        return compact_json(self.payload)


@dataclass(frozen=True)
class Cancelled:
    """The script set ``cancel: true``: record the delivery as cancelled, send nothing."""

    webhook: dict[str, Any]
    reason: str = "transformation"


@dataclass(frozen=True)
class TransformFailed:
    """The script failed: ``kind`` is ``error`` (it threw, did not compile, or returned
    something unusable), ``timeout`` or ``memory``; ``line`` is the script's line, when
    known. Not the receiver's fault: not retried, not counted by the breaker."""

    kind: FailureKind
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"transformation {self.kind}: {self.message}{where}"


TransformOutcome = Transformed | Cancelled | TransformFailed


class TransformUnavailable(Exception):
    """The engine cannot run scripts now (it is closed, or its processes keep failing to
    start). Not the script's fault: leave the delivery to be tried again later."""


def webhook_for(url: str, envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The object a handler receives for ``envelope`` sent to ``url``."""
    return {
        "method": METHOD,
        "url": url,
        "eventType": envelope["type"],
        "payload": envelope,
        "cancel": False,
    }


def webhook_text(url: str, event_type: str, body: str) -> str:
    """The same object as JSON text, around an envelope ``body`` already printed (the
    dispatcher has it): ``run`` takes it as it is, without encoding the envelope again."""
    url_text = json.dumps(url, ensure_ascii=False)
    type_text = json.dumps(event_type, ensure_ascii=False)
    return (
        f'{{"method":"{METHOD}","url":{url_text},"eventType":{type_text},'
        f'"payload":{body},"cancel":false}}'
    )


def _error(message: str) -> TransformFailed:
    return TransformFailed("error", message)


def judge(text: str) -> TransformOutcome:
    """The outcome of the JSON text a handler's returned object was printed as."""
    try:
        webhook = json.loads(text)
    except ValueError as exc:  # a toJSON the script defined may print anything
        return _error(f"the returned webhook is not JSON: {exc}")
    if not isinstance(webhook, dict):
        return _error("handler must return the webhook object")
    cancel = webhook.get("cancel", False)
    if cancel is True:
        return Cancelled(webhook)
    if cancel is not False:
        return _error("cancel must be true or false")
    method = webhook.get("method", METHOD)
    if method != METHOD:
        return _error(f"method is read-only: tidings sends every webhook with {METHOD}")
    url = webhook.get("url")
    if not isinstance(url, str) or not url:
        return _error("url must be a non-empty string")
    if "payload" not in webhook:
        return _error(
            "the returned webhook has no payload (undefined, a function or a symbol is not JSON)"
        )
    if not isinstance(webhook["payload"], dict | list):
        return _error("payload must be a JSON object or array")
    webhook["method"] = METHOD
    return Transformed(webhook)
