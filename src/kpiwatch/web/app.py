"""The ASGI app: health, the JSON API, the pages and ``/metrics`` on one server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client.exposition import choose_encoder

from kpiwatch import __version__
from kpiwatch.web.access import AccessGuard, login_router
from kpiwatch.web.api import api_router
from kpiwatch.web.context import WebContext
from kpiwatch.web.exporter import render
from kpiwatch.web.health import health_router
from kpiwatch.web.limits import BodyLimit
from kpiwatch.web.pages import pages_router

# The pages carry their CSS and SVG inline and load nothing: forbid everything else,
# so injected markup could neither run script nor call out of a closed network.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(
        title="kpiwatch",
        version=__version__,
        description="KPI status, history, silences, annotations, acks and pushed values. "
        "Writes need `Authorization: Bearer $KPIWATCH_API_TOKEN`. With KPIWATCH_READ_TOKEN "
        "set, reads (this document too) need `Authorization: Bearer` with the read token or "
        "the API token. Request bodies over KPIWATCH_MAX_BODY_BYTES get 413.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: not on a closed network
        redoc_url=None,
    )
    app.include_router(health_router(ctx))
    app.include_router(api_router(ctx))
    app.include_router(pages_router(ctx))
    app.include_router(login_router(ctx.settings))

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(render(ctx.registry, encoder), media_type=content_type)

    # Pure ASGI: a refused request is answered before any route, so before any body is
    # read. The guard is outside the limit: a stranger's oversized read gets the 401/303.
    # Both sit inside security_headers (added after them, so outermost), which reads no
    # body either and puts its headers on their answers too.
    app.add_middleware(BodyLimit, max_bytes=ctx.settings.max_body_bytes)
    app.add_middleware(AccessGuard, settings=ctx.settings)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    return app
