"""``headstart serve``: fitted runs behind an HTTP API and a page to try them (FastAPI on uvicorn,
the exported graph in ONNX Runtime, dynamic batching behind a bounded queue)."""

from .app import Settings, create_app
from .models import ServedModel, load_served
from .server import check_exposure, load_runs, serve

__all__ = ["Settings", "ServedModel", "check_exposure", "create_app", "load_runs", "load_served", "serve"]
