"""The connection to an Argilla server, and the two calls that cross it (log records, read answers).

URL and workspace come from the recipe or the environment; the API key only from the
environment variable the recipe names. Errors name the setting to fix and never carry the key.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from tapir.errors import EndpointError, RecipeError
from tapir.manifest import error_line
from tapir.recipe import ArgillaSettings

DEFAULT_WORKSPACE = "argilla"


@dataclass(frozen=True)
class Connection:
    api_url: str
    workspace: str
    api_key_env: str
    timeout_s: float

    def api_key(self) -> str:
        return os.environ[self.api_key_env]


def resolve(settings: ArgillaSettings) -> Connection:
    """Settings from the recipe, else the environment; a clear error for what is missing."""
    url = settings.api_url or os.environ.get("ARGILLA_API_URL")
    if not url:
        raise RecipeError(
            "review.argilla.api_url: not set (nor $ARGILLA_API_URL); where is the Argilla server?"
        )
    if not os.environ.get(settings.api_key_env):
        raise RecipeError(
            f"review.argilla.api_key_env: ${settings.api_key_env} is not set (the Argilla API key; "
            "tapir reads it from the environment only)"
        )
    workspace = settings.workspace or os.environ.get("ARGILLA_WORKSPACE") or DEFAULT_WORKSPACE
    return Connection(url.rstrip("/"), workspace, settings.api_key_env, settings.timeout_s)


def connect(connection: Connection) -> Any:
    """An ``argilla.Argilla`` client that has reached the server and been accepted."""
    import argilla as rg

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = rg.Argilla(
                api_url=connection.api_url, api_key=connection.api_key(), timeout=int(connection.timeout_s)
            )
            client.me  # noqa: B018 - the first authenticated call
    except Exception as error:  # the SDK raises several httpx/argilla types for one cause
        text = error_line(error)
        if "401" in text or "nauthori" in text:
            raise EndpointError(
                f"review.argilla: ${connection.api_key_env} was rejected by {connection.api_url}"
            ) from None
        raise EndpointError(f"review.argilla.api_url: cannot reach {connection.api_url} ({text})") from None
    return client


def workspace(client: Any, connection: Connection) -> Any:
    found = client.workspaces(connection.workspace)
    if found is None:
        raise RecipeError(
            f"review.argilla.workspace: {connection.workspace!r} does not exist on {connection.api_url}"
        )
    return found


def find_dataset(client: Any, connection: Connection, name: str) -> Any | None:
    space = workspace(client, connection)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.datasets(name=name, workspace=space)


def fetch_records(client: Any, dataset: Any, page: int = 256) -> list[dict[str, Any]]:
    """Every record with its metadata and all responses, statuses included.

    Read through the SDK's API layer: its ``Record`` objects drop a response's status on export
    (``to_disk`` writes values only) and fail on a response discarded with no values, which is
    exactly what reviewers' "discard" produces.
    """
    records: list[dict[str, Any]] = []
    offset = 0
    while True:
        batch = client.api.records.list(dataset.id, offset=offset, limit=page, with_suggestions=False)
        for model in batch:
            records.append(
                {
                    "id": model.external_id or str(model.id),
                    "metadata": _metadata(model),
                    "responses": [
                        {
                            "user_id": r.user_id,
                            "status": getattr(r.status, "value", r.status),
                            "values": r.values,
                        }
                        for r in model.responses or []
                    ],
                }
            )
        if len(batch) < page:
            return records
        offset += page


def _metadata(model: Any) -> dict[str, Any]:
    raw = model.metadata or {}
    if isinstance(raw, list):  # the API model validates metadata into [MetadataModel(name, value)]
        return {item.name: item.value for item in raw}
    return dict(raw)
