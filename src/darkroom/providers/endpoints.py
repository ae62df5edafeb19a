"""Callbacks from providers: the Replicate webhook (``REPLICATE_WEBHOOK_URL`` points here)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from darkroom.deps import Context
from darkroom.errors import NotFound, Unauthorized, Unprocessable
from darkroom.providers import callbacks, webhooks
from darkroom.providers.replicate import ReplicateProvider
from darkroom.schemas import ok

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

MAX_WEBHOOK_BYTES = 1024 * 1024


@router.post("/replicate")
async def replicate_webhook(request: Request, ctx: Context) -> dict[str, Any]:
    """A finished prediction, signed by Replicate (Standard Webhooks); reaches the waiting task."""
    provider = ctx.registry.get("replicate")
    secret = ctx.settings.replicate_webhook_secret
    if not isinstance(provider, ReplicateProvider) or not secret:
        raise NotFound("Replicate webhooks are not configured here.", code="webhook_not_configured")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise Unprocessable("The webhook body is too large.", code="invalid_webhook")
    try:
        webhooks.verify(secret, request.headers, body)
    except webhooks.WebhookRejected as exc:
        raise Unauthorized(exc.message, code=exc.code) from None
    try:
        prediction = json.loads(body)
    except ValueError:
        raise Unprocessable("The webhook body is not JSON.", code="invalid_webhook") from None
    if not isinstance(prediction, dict):
        raise Unprocessable("The webhook body is not a prediction.", code="invalid_webhook")
    pid = prediction.get("id")
    if not isinstance(pid, str) or not pid or len(pid) > 255:
        raise Unprocessable("The webhook body is not a prediction (no id).", code="invalid_webhook")
    # A run waiting in this process takes it at once; otherwise it goes through the database to
    # the worker that waits on it, wherever that runs.
    delivered = provider.deliver(prediction)
    if not delivered:
        await callbacks.record(ctx.db, provider.name, pid, prediction)
    return ok({"delivered": delivered, "recorded": not delivered})
