"""FastAPI app factory: the REST API, the dashboard pages, login and the error shape."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # importing pitstop.web (e.g. for the user store from the CLI) must not build the whole app
    if name == "create_app":
        from pitstop.web.app import create_app

        return create_app
    raise AttributeError(name)
