"""distilabel's local ``Pipeline`` without a cost that grows with every batch.

After each batch, distilabel's main process saves its cache (``BasePipeline._cache``): it finds
the cache folder through ``_cache_location``, which recomputes every step's signature (a full
dump of each step, ``inspect.signature`` included) on each of its several uses, and it re-saves
the pipeline YAML, which cannot change during a run (distilabel issue #666 tracks the slow
cache writes). On 2 cores at Alpaca's size that single main-process loop, not the model
endpoint, set the pace. Both are fixed for a run, so we compute the location once per run and
save the YAML once; the batch manager and stage status are still saved after every batch, so
a run stopped half-way resumes exactly as before.
"""

from __future__ import annotations

from typing import Any

from distilabel.pipeline import Pipeline


class TapirPipeline(Pipeline):
    _tapir_location: dict[str, Any] | None = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._tapir_location = None
        try:
            return super().run(*args, **kwargs)
        finally:
            self._tapir_location = None

    @property
    def _cache_location(self) -> Any:
        if self._tapir_location is not None:
            return self._tapir_location
        return super()._cache_location

    def _cache(self) -> None:
        if self._dry_run:
            return
        if self._tapir_location is None:  # the run's first save: everything, location frozen
            super()._cache()
            self._tapir_location = super()._cache_location
            return
        if self._batch_manager is not None:
            self._batch_manager.cache(
                path=self._tapir_location["batch_manager"],
                steps_data_path=self._tapir_location["steps_data"],
            )
        self._save_stages_status()
