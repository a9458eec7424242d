"""FastAPI app factory: the REST API, the dashboard pages and the error shape."""

from pitstop.web.app import create_app

__all__ = ["create_app"]
