"""What a transformation run ends in, and the webhook object scripts see (Svix's shape).

A script's handler gets ``{method: "POST", url, eventType, payload, cancel: false}``,
where ``payload`` is the envelope that would be sent, and returns it, changed. Its answer
is judged in the sandbox process (``_worker.judge``, so a huge or deep answer costs the
server nothing), which hands back the exact body and the rest of the webhook:

* ``cancel: true`` → :class:`Cancelled` (the rest is not looked at: nothing is sent);
* otherwise ``method`` must still be ``"POST"`` (tidings sends every webhook with POST:
  the method is read-only, and Svix too refuses a method it cannot send), ``url`` a string
  and ``payload`` a JSON object or array → :class:`Transformed`; ``eventType`` is for the
  script to read, and a change to it is ignored;
* anything else (also nesting deeper than 64 levels, more than 200,000 values, a body
  over the size limit or a string that is not well-formed UTF-16), and a script that
  throws, loops or runs out of memory, → :class:`TransformFailed`, whose ``str()`` is
  the text for the delivery log (``"error: …"``, ``"timeout: …"``, ``"memory: …"``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from tidings.domain.subscriptions import InvalidUrl, validate_url_shape

FailureKind = Literal["error", "timeout", "memory"]
METHOD = "POST"


def _parsed(rest: str, body: str | None) -> dict[str, Any]:
    webhook: dict[str, Any] = json.loads(rest)
    if body:
        webhook["payload"] = json.loads(body)
    return webhook


@dataclass(frozen=True)
class Transformed:
    """Send ``body`` (the returned ``payload`` as JavaScript's ``JSON.stringify`` printed
    it: the bytes to sign) to ``url`` (which must pass the URL checks and the SSRF guard
    again if the script changed it). ``webhook`` and ``payload`` parse it again, for
    showing (the dry run): the delivery path never needs them."""

    url: str
    body: str
    rest: str = "{}"
    """The returned webhook without its payload, as JSON text."""

    @cached_property
    def webhook(self) -> dict[str, Any]:
        return _parsed(self.rest, self.body) | {"method": METHOD}

    @property
    def payload(self) -> Any:
        return self.webhook["payload"]


@dataclass(frozen=True)
class Cancelled:
    """The script set ``cancel: true``: record the delivery as cancelled, send nothing."""

    rest: str = "{}"
    body: str = ""
    reason: str = "transformation"

    @cached_property
    def webhook(self) -> dict[str, Any]:
        """The object the handler returned (parsed when asked: the dry run shows it)."""
        return _parsed(self.rest, self.body)


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
        return f"{self.kind}: {self.message}{where}"


TransformOutcome = Transformed | Cancelled | TransformFailed


class TransformUnavailable(Exception):
    """The engine cannot run scripts now (it is closed, or its processes keep failing to
    start). Not the script's fault: leave the delivery to be tried again later."""


def checked_target(outcome: TransformOutcome, url: str, allow_http: bool) -> TransformOutcome:
    """``outcome``, unless it sends to a url other than ``url`` (the subscription's) that
    fails the checks a subscription's url must pass: then the failure a delivery records.
    The SSRF guard still checks the address connected to, as for every POST."""
    if isinstance(outcome, Transformed) and outcome.url != url:
        try:
            validate_url_shape(outcome.url, allow_http=allow_http)
        except InvalidUrl as exc:
            return TransformFailed("error", f"the url it set: {exc}")
    return outcome


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
