"""The API documentation pages, served without a CDN.

FastAPI's own `/docs` and `/redoc` load Swagger UI and ReDoc from a CDN (and ReDoc its fonts
from Google), so they stay blank where the service has no internet access. These pages load the
same files from the `fastapi-offline` package instead (Swagger UI 5, ReDoc 2 and a favicon, in
its `static` folder), mounted under `/docs/assets`: opening them needs no host but this one.

Only the package's files are used, not its `FastAPIOffline` factory, so the application is
still created by `create_app` (with `docs_url=None, redoc_url=None`), and the pages are built
with FastAPI's own `get_swagger_ui_html` and `get_redoc_html`, as FastAPI's guide to
self-hosting the docs' JavaScript and CSS does.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
# The package and folder holding swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and
# favicon.png; the docs page's browser test fails if a new version moves them.
ASSETS_PACKAGE = ("fastapi_offline", "static")


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at `/docs` (with its OAuth2 redirect page) and ReDoc at `/redoc`.

    The app must be created with `docs_url=None, redoc_url=None` so that FastAPI's CDN-based
    pages are not registered first. Links honour the ASGI `root_path`, like FastAPI's own pages.
    The pages stay out of the OpenAPI schema.
    """
    openapi_url = app.openapi_url
    if openapi_url is None:  # no schema, nothing to document
        return
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    if redirect_url:

        @app.get(redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        # ReDoc's sidebar shows a logo from Redocly's CDN (no option turns it off): the browser
        # is told not to fetch images from elsewhere, so the page never reaches for it.
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
