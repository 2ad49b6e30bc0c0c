"""Subscription filters: the dry run."""

from __future__ import annotations

from fastapi import APIRouter

from tidings.api.auth import TidingsDep, WebhooksWriter
from tidings.api.schemas import FilterTest, FilterTestResult

router = APIRouter(prefix="/api/v1/filters", tags=["filters"])


@router.post("/test", response_model=FilterTestResult)
async def test_filter(
    request: FilterTest, _: WebhooksWriter, tidings: TidingsDep
) -> FilterTestResult:
    """Whether ``envelope`` passes ``filter``, as the fan-out decides it; a 422 naming the
    path and the operator if the filter is not valid. Nothing is stored."""
    return FilterTestResult(matches=tidings.test_filter(request.filter, request.envelope))
