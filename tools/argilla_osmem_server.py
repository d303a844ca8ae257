"""argilla-server's own CLI, run by ``.venv-argilla/bin/python`` against ``osmem-server``.

osmem-server (the in-memory OpenSearch stand-in) runs no painless scripts, and Argilla uses one
for exactly three search-index updates: an answer saved (every submit, draft or discard from the
UI), an answer deleted, a suggestion deleted. Here those three read the record's document, change
it in Python as the script would, and write it back; everything else is argilla-server as shipped.
Only the local, single-machine server needs this: Docker and Spaces run real OpenSearch or
Elasticsearch. (Two reviewers saving the same record in the same instant could lose one index
update; the database, which `tapir review pull` reads through the API, keeps both.)

    .venv-argilla/bin/python tools/argilla_osmem_server.py start --port 6900
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argilla_server.search_engine.commons import es_index_name_for_dataset
from argilla_server.search_engine.opensearch import OpenSearchEngine


async def _rewrite(engine: OpenSearchEngine, record: Any, change: Callable[[dict[str, Any]], None]) -> None:
    index = es_index_name_for_dataset(record.dataset)
    found = await engine.client.get(index=index, id=str(record.id))
    source = found["_source"]
    change(source)
    await engine.client.index(index=index, id=str(record.id), body=source, refresh=True)


def _without(responses: list[dict[str, Any]] | None, response_id: Any) -> list[dict[str, Any]]:
    return [r for r in responses or [] if str(r.get("id")) != str(response_id)]


async def update_record_response(self: OpenSearchEngine, response: Any) -> None:
    document = self._map_record_response_to_es(response)

    def change(source: dict[str, Any]) -> None:
        source["responses"] = [*_without(source.get("responses"), response.id), document]

    await _rewrite(self, response.record, change)


async def delete_record_response(self: OpenSearchEngine, response: Any) -> None:
    def change(source: dict[str, Any]) -> None:
        source["responses"] = _without(source.get("responses"), response.id)

    await _rewrite(self, response.record, change)


async def delete_record_suggestion(self: OpenSearchEngine, suggestion: Any) -> None:
    def change(source: dict[str, Any]) -> None:
        (source.get("suggestions") or {}).pop(suggestion.question.name, None)

    await _rewrite(self, suggestion.record, change)


OpenSearchEngine.update_record_response = update_record_response
OpenSearchEngine.delete_record_response = delete_record_response
OpenSearchEngine.delete_record_suggestion = delete_record_suggestion

if __name__ == "__main__":
    from argilla_server.cli import app

    app()
