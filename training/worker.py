"""One round's training inside ``accelerate launch`` (see ``tapir.training.launch``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from tapir.manifest import write_json
from tapir.recipe import recipe_from_dict
from tapir.training.launch import METRICS
from tapir.training.sft import RoundSpec, train_round


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    recipe = recipe_from_dict(job["recipe"], origin=job_path)
    round_ = job["round"]
    spec = RoundSpec(
        name=round_["name"],
        data_path=Path(round_["data_path"]),
        start_model=round_["start_model"],
        folder=Path(round_["folder"]),
    )
    from accelerate import PartialState

    state = PartialState()
    metrics = train_round(recipe, spec, Console() if state.is_main_process else None, None, job["identity"])
    if state.is_main_process:
        write_json(spec.folder / METRICS, metrics)


if __name__ == "__main__":
    main(sys.argv[1])
