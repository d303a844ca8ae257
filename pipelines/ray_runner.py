"""``pipeline.runner: ray``: the step graph on distilabel's Ray runner, set up for tapir.

distilabel runs every step replica as a Ray actor; the driver (``tapir data``) keeps the batch
manager, distilabel's cache and the write buffer. What each step needs from outside must be
where every Ray node finds it: tapir's engines at ``pipeline.engine_host`` (loopback unless the
recipe says otherwise), and ``cache_dir`` (the response cache) and ``output_dir`` (the usage logs
each step appends to) on a filesystem every node sees at the same path. Each node must have
tapir installed as the driver has it (same Python, same packages).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from typing import Any

from tapir.errors import DataError, EndpointError
from tapir.recipe import Recipe

#: Ray's single-node switch: node addresses stay on loopback instead of the routable interface.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def ray_missing() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "pipeline.runner: ray needs Ray in tapir's environment: pip install 'tapir-distill[ray]'"
    return None


def check_ray(recipe: Recipe, reach: bool = True) -> None:
    """Ray is installed and, with ``ray_address``, its head answers (one line if not)."""
    if recipe.pipeline.runner != "ray":
        return
    if missing := ray_missing():
        raise DataError(missing)
    address = recipe.pipeline.ray_address
    if not reach or not address or address == "auto":
        return
    host, port = _host(address), address.rpartition(":")[2]
    if not host or not port.isdigit():
        raise DataError(
            f"pipeline.ray_address: {address!r} is not host:port (as `ray start --head` prints it)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise EndpointError(
            f"pipeline.ray_address: no Ray head answers at {address} ({exc.strerror or exc}); "
            "start one with `ray start --head` or fix the address"
        ) from None


def init_options(recipe: Recipe) -> dict[str, Any]:
    """``ray.init`` options: the steps' output stays in Ray's session logs (tapir's progress
    table is the console), and a Ray started here for one machine listens on loopback only."""
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    address = recipe.pipeline.ray_address
    if not address or _host(address) in ("127.0.0.1", "localhost"):
        # Ray would put this driver on the machine's routable address, where a head started on
        # loopback does not answer; read when ray is imported (distilabel does it later).
        os.environ.update(LOOPBACK_ONLY)
    if not address:
        options.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    return options


def _host(address: str) -> str:
    return address.removeprefix("ray://").rpartition(":")[0]


def ray_pipeline(pipeline: Any, recipe: Recipe) -> Any:
    return pipeline.ray(ray_head_node_url=recipe.pipeline.ray_address, ray_init_kwargs=init_options(recipe))
