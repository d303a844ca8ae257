"""One round's training in one of the processes a launcher started (see ``tapir.training.launch``)."""

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
    from accelerate import PartialState
    from accelerate.utils.environment import get_cpu_distributed_information

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    recipe = recipe_from_dict(job["recipe"], origin=job_path)
    round_ = job["round"]
    spec = RoundSpec(
        name=round_["name"],
        data_path=Path(round_["data_path"]),
        start_model=round_["start_model"],
        folder=Path(round_["folder"]),
    )
    # The rank from the launcher's environment (RANK; PMI_RANK under mpirun): the distributed
    # state itself is set up by the Trainer, for the device type the launcher asked for.
    main_rank = get_cpu_distributed_information().rank == 0
    metrics = train_round(
        recipe, spec, Console() if main_rank else None, None, job["identity"], owner=job.get("owner")
    )
    state = PartialState()
    if state.is_main_process:
        write_json(spec.folder / METRICS, {**metrics, "processes": state.num_processes})


if __name__ == "__main__":
    main(sys.argv[1])
