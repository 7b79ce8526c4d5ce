"""HTTP layer: the FastAPI app factory, routes, schemas and the error mapping."""

from service.api.app import create_app

__all__ = ["create_app"]
