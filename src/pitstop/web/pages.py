"""The dashboard's pages: static HTML and JS shipped with the package, data from the JSON API.

Each page is a file; the guard in front of these routes sends a caller without a session to the
login page, and a role without the page's permission gets a 403 page.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

from pitstop.web.guard import GuardedRoute

STATIC = resources.files("pitstop.web") / "static"
_NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(str(STATIC / name), headers=_NO_STORE)


@router.get("/")
def fleet_page() -> FileResponse:
    return _page("fleet.html")


@router.get("/machines/{machine_id}")
def machine_page(machine_id: str) -> FileResponse:
    return _page("machine.html")


@router.get("/work-orders")
def work_orders_page() -> FileResponse:
    return _page("work-orders.html")


@router.get("/models")
def models_page() -> FileResponse:
    return _page("models.html")


@router.get("/data")
def data_page() -> FileResponse:
    return _page("data.html")


@router.get("/audit")
def audit_page() -> FileResponse:
    return _page("audit.html")
