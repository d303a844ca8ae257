"""distilabel's pipelines (local and Ray) without a cost that grows with every batch.

After each batch, distilabel's main process saves its cache (``BasePipeline._cache``): it finds
the cache folder through ``_cache_location``, which recomputes every step's signature (a full
dump of each step, ``inspect.signature`` included) on each of its several uses, and it re-saves
the pipeline YAML, which cannot change during a run (distilabel issue #666 tracks the slow
cache writes). On 2 cores at Alpaca's size that single main-process loop, not the model
endpoint, set the pace. Both are fixed for a run, so we compute the location once per run and
save the YAML once; the batch manager and stage status are still saved after every batch, so
a run stopped half-way resumes exactly as before.

It also keeps distilabel's write buffer from failing on sparse columns: the buffer writes a
leaf step's rows in several parquet files and, at the end, reads each back with the *first*
file's schema unless the column names changed. An error column that is all null in the first
file (type ``null``) and holds a reason in a later one (``string``) then ended the whole run in
``ArrowNotImplementedError: Unsupported cast from string to null`` — any run whose first rows
parsed cleanly and a later one did not (a flaky endpoint made it likely).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import distilabel.utils.serialization as _serialization
import pyarrow as pa
import yaml
from distilabel.pipeline import Pipeline
from distilabel.pipeline.ray import RayPipeline
from distilabel.pipeline.write_buffer import _WriteBuffer

from tapir.staging import remove_stale, staging_path


def _whole_or_absent(write: Any) -> Any:
    """distilabel writes its cache files (pipeline.yaml, the batch manager, the stage status) in
    place: a run killed mid-write left a truncated pipeline.yaml that every later run of the
    recipe failed to read (KeyError: 'type_info'). Written beside and renamed, a file is whole
    or absent; a killed run's partial file goes when the next write of the same file comes."""

    def atomic(filename: Path, data: Any) -> None:
        filename = Path(filename)
        filename.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(filename)
        partial = staging_path(filename)
        write(partial, data)
        os.replace(partial, filename)

    atomic.tapir_atomic = True  # type: ignore[attr-defined]
    return atomic


for _name in ("write_json", "write_yaml"):
    if not getattr(getattr(_serialization, _name), "tapir_atomic", False):
        setattr(_serialization, _name, _whole_or_absent(getattr(_serialization, _name)))


class _TypeWideningWriteBuffer(_WriteBuffer):
    """Keeps each leaf step's schema the widest seen so far (``null`` widens to any type)."""

    def _write(self, step_name: str) -> None:
        last = self._buffer_last_schema.get(step_name)
        if last is not None and self._buffers[step_name]:
            try:
                seen = pa.Table.from_pylist(self._buffers[step_name]).schema
                if set(seen.names) == set(last.names) and not seen.equals(last):
                    widened = pa.unify_schemas([last, seen], promote_options="permissive")
                    self._buffer_last_schema[step_name] = pa.schema([widened.field(n) for n in last.names])
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                pass  # distilabel's own handling applies
        super()._write(step_name)


class _TapirRunFixes:
    """tapir's fixes to distilabel's driver loop; they hold for either runner (both run the
    batch manager, cache and write buffer in the driver process)."""

    _tapir_location: dict[str, Any] | None = None

    def _setup_write_buffer(self, use_cache: bool = True) -> None:
        super()._setup_write_buffer(use_cache)  # type: ignore[misc]
        self._write_buffer.__class__ = _TypeWideningWriteBuffer  # type: ignore[attr-defined]

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._tapir_location = None
        self.interrupted = False
        try:
            return super().run(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._tapir_location = None

    def _handle_keyboard_interrupt(self) -> Any:
        """distilabel answers Ctrl-C by stopping the graph and returning what it has, as if the run
        had ended; tapir must know it was stopped (``interrupted``) to say so and keep nothing."""

        def on_interrupt(signum: int, frame: Any) -> None:
            self.interrupted = True
            self._stop()  # type: ignore[attr-defined]

        return signal.signal(signal.SIGINT, on_interrupt)

    def _refresh_pipeline_from_cache(self) -> None:
        """A pipeline.yaml that cannot be read (cut short by a kill before its writes were
        atomic) is dropped: the graph built now is the same one, so the run goes on without it."""
        try:
            super()._refresh_pipeline_from_cache()  # type: ignore[misc]
        except (KeyError, ValueError, TypeError, yaml.YAMLError):
            broken = self._cache_location["pipeline"]
            logging.getLogger("distilabel.pipeline").warning(f"unreadable {broken} removed")
            broken.unlink(missing_ok=True)

    @property
    def _cache_location(self) -> Any:
        if self._tapir_location is not None:
            return self._tapir_location
        return super()._cache_location  # type: ignore[misc]

    def _cache(self) -> None:
        if self._dry_run:  # type: ignore[attr-defined]
            return
        if self._tapir_location is None:  # the run's first save: everything, location frozen
            super()._cache()  # type: ignore[misc]
            self._tapir_location = super()._cache_location  # type: ignore[misc]
            return
        if self._batch_manager is not None:  # type: ignore[attr-defined]
            self._batch_manager.cache(  # type: ignore[attr-defined]
                path=self._tapir_location["batch_manager"],
                steps_data_path=self._tapir_location["steps_data"],
            )
        self._save_stages_status()  # type: ignore[attr-defined]


class TapirRayPipeline(_TapirRunFixes, RayPipeline):
    """distilabel's Ray runner with tapir's fixes (``Pipeline.ray()`` would build a stock one)."""

    def _init_ray(self) -> None:
        _ray_messages_to_log()
        try:
            super()._init_ray()
        except ConnectionError as exc:  # Ray's own message names the address it tried
            from tapir.errors import EndpointError

            raise EndpointError(f"pipeline.ray_address: {exc}") from None


def _ray_messages_to_log() -> None:
    """Ray prints its cluster's messages ("(raylet) WARNING: 26 PYTHON worker processes ...") on
    the driver's terminal whatever ``log_to_driver`` says (its listener thread has no switch), so
    its printer is pointed at distilabel's logger: they land in the run's distilabel.log."""
    import ray._private.worker as ray_worker

    logger = logging.getLogger("distilabel.pipeline.ray")

    def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            logger.info("(%s) %s", data.get("pid", "ray"), line)

    ray_worker.print_to_stdstream = to_log


class TapirPipeline(_TapirRunFixes, Pipeline):
    def ray(
        self, ray_head_node_url: str | None = None, ray_init_kwargs: dict[str, Any] | None = None
    ) -> TapirRayPipeline:
        """The same graph on distilabel's Ray runner, keeping tapir's fixes."""
        pipeline = TapirRayPipeline(
            name=self.name,
            description=self.description,
            cache_dir=self._cache_dir,
            enable_metadata=self._enable_metadata,
            requirements=self.requirements,
            ray_head_node_url=ray_head_node_url,
            ray_init_kwargs=ray_init_kwargs,
        )
        pipeline.dag = self.dag
        return pipeline
