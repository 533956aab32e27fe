"""OpenMaaS: a self-hosted model-as-a-service platform.

`from openmaas import Client, AsyncClient` gives the Python SDK; the server lives in
`openmaas.api` and the command line in `openmaas.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from openmaas.sdk import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported lazily so `import openmaas` stays light for the CLI and workers.
    if name in ("Client", "AsyncClient"):
        from openmaas import sdk

        return getattr(sdk, name)
    raise AttributeError(name)
