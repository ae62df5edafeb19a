from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from darkroom import __version__
from darkroom.deps import Context

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process is alive."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(ctx: Context) -> JSONResponse:
    """The database and the storage are reachable."""
    checks: dict[str, str] = {}
    try:
        async with ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await ctx.storage.check()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
