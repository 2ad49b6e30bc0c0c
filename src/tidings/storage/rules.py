"""Rules every queue implementation keeps, whatever stores the rows (SQL or memory)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tidings.domain.deliveries import AttemptResult, DeliveryStatus, DisableReason, Failure
from tidings.storage.records import AttemptOutcome

TERMINAL = frozenset(
    {DeliveryStatus.SUCCEEDED.value, DeliveryStatus.FAILED.value, DeliveryStatus.CANCELLED.value}
)


def recorded_status(o: AttemptOutcome, enabled: bool | None) -> str:
    """The verdict's status, unless the subscription was disabled (a retry waits, paused)
    or deleted (nothing more is sent) while the attempt was in flight."""
    status = o.verdict.status
    if enabled is None:
        return DeliveryStatus.CANCELLED.value if status is DeliveryStatus.PENDING else status.value
    if not enabled and status is DeliveryStatus.PENDING:
        return DeliveryStatus.PAUSED.value
    return status.value


def attempt_outcome(result: AttemptResult) -> str:
    """How the delivery log files an attempt: ``succeeded``, ``failed``, or ``cancelled``
    (by the subscription's transformation: nothing was sent)."""
    if result.succeeded:
        return "succeeded"
    return "cancelled" if result.failure is Failure.CANCELLED else "failed"


def lets_next_go(o: AttemptOutcome, status: str) -> bool:
    """A FIFO delivery that is done (delivered or given up) lets the next of its key go."""
    return o.claimed.ordering_key is not None and status in TERMINAL


def streak_changes(outcomes: Sequence[AttemptOutcome]) -> list[tuple[str, int | None]]:
    """Per subscription, in id order: None to reset its failure streak, else failures to add.

    Rows are updated in id order, so two workers recording at once lock them in the same
    order and cannot deadlock. Connectors skip the reset when the streak is already 0,
    so healthy subscriptions do not become a row every record transaction must lock.
    A transformation's failure or cancel is the subscription's own script: not counted.
    """
    delta: dict[str, int | None] = {}
    for o in outcomes:
        if not o.result.reached_for_receiver:
            continue
        sub_id = o.claimed.subscription_id
        delta[sub_id] = None if o.result.succeeded else (delta.get(sub_id) or 0) + 1
    return sorted(delta.items())


class LaneWakes:
    """The earliest time each lane touched by a transaction must be looked at again."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}

    def wake(self, sub_id: str, due_ms: int) -> None:
        self._due[sub_id] = min(due_ms, self._due.get(sub_id, due_ms))

    def recorded(self, o: AttemptOutcome, status: str) -> None:
        """A retry falls due then; a lane held to ``maxConcurrency`` has a free slot now."""
        if status == DeliveryStatus.PENDING.value and o.verdict.next_attempt_ms is not None:
            self.wake(o.claimed.subscription_id, o.verdict.next_attempt_ms)
        if o.claimed.max_concurrency is not None:
            self.wake(o.claimed.subscription_id, o.finished_ms)

    def params(self) -> Iterator[dict[str, Any]]:
        for sub_id in sorted(self._due):
            yield {"sub": sub_id, "due": self._due[sub_id]}


def subscription_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription's ``changes`` as every store applies them: enabling clears the
    breaker (no reason, no failure streak); disabling without a reason is manual."""
    values = dict(changes)
    if values.get("enabled") is True:
        values.update(disabled_reason=None, consecutive_failures=0)
    elif values.get("enabled") is False:
        reason = values.get("disabled_reason", DisableReason.MANUAL)
        values["disabled_reason"] = DisableReason(reason)
    return values
