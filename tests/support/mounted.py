"""The replica app embedded the two ways a prefix reaches it (user code, not our components).

``app``: mounted in a bigger Starlette app under ``/api`` (``Mount``); ``replica``: the bare
replica app, for ``uvicorn --root-path /api`` (a proxy strips ``/api`` in front of it).
Settings come from ``LCHA_*`` variables.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from langchain_ha.serve.app import create_app
from langchain_ha.serve.settings import ServeSettings
from tests.support.apps import nap

app = Starlette(routes=[Mount("/api", app=create_app(nap, ServeSettings()))])
replica = create_app(nap, ServeSettings())
