"""One curriculum round = one TRL ``SFTTrainer`` run, from the previous round's model.

Everything the Trainer already does (chat-template tokenisation with assistant masks, packing,
LoRA through peft, gradient accumulation, cosine schedule, mid-round checkpoints and resuming
from them, accelerate/DeepSpeed) is left to it; this module only translates the recipe into an
``SFTConfig`` and saves the round's final model so the next round and the evaluator can load it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tapir.native_output import quiet_transformers_local_bars
from tapir.recipe import SFT_FIELDS, Recipe, TrainingSettings
from tapir.stage_contract import CHECKPOINT_ID, MODEL_DIR
from tapir.staging import staging_dir, staging_path, swap_into_place
from tapir.training.model_setup import load_tokenizer
from tapir.training.progress import NoFinalCheckpoint, TrainingLog
from tapir.training.round_data import load_round

CHECKPOINTS = "checkpoints"
LOG_FILE = "train_log.jsonl"
TENSORBOARD_DIR = "tensorboard"  # training.report_to: tensorboard writes here, per round


@dataclass(frozen=True)
class RoundSpec:
    """What one round trains: its data, its starting model and where it writes."""

    name: str  # "warmup", "round_1", ...
    data_path: Path
    start_model: str
    folder: Path

    @property
    def model_dir(self) -> Path:
        return self.folder / MODEL_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / CHECKPOINTS


def sft_config(
    settings: TrainingSettings, output_dir: Path, seed: int, eos_token: str, run_name: str | None = None
) -> Any:
    """The recipe's training section as TRL's ``SFTConfig``."""
    from trl import SFTConfig

    fields: dict[str, Any] = {name: getattr(settings, name) for name in SFT_FIELDS}
    fields.update(
        {
            "output_dir": str(output_dir),
            "max_steps": settings.max_steps or -1,
            "eos_token": eos_token,  # TRL adds it to the generation config, so generation stops there
            "activation_checkpointing": settings.gradient_checkpointing,
            "save_strategy": "steps",
            "seed": seed,
            "data_seed": seed,
            "include_num_input_tokens_seen": "non_padding",
            "report_to": list(settings.report_to),
            "run_name": run_name,
            "model_init_kwargs": {"dtype": settings.dtype},
            "dataset_num_proc": None,
            "dataloader_pin_memory": _has_accelerator(),
            # every weight (or adapter) gets a gradient: DDP's extra search for unused ones is wasted
            "ddp_find_unused_parameters": False,
        }
    )
    fields.update(settings.sft_options)
    return SFTConfig(**fields)


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def peft_config(settings: TrainingSettings) -> Any:
    if not settings.lora.enabled:
        return None
    from peft import LoraConfig

    lora = settings.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def last_checkpoint(spec: RoundSpec) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not spec.checkpoint_dir.is_dir():
        return None
    return get_last_checkpoint(str(spec.checkpoint_dir))


def build_trainer(
    recipe: Recipe, spec: RoundSpec, console: Console | None = None, callbacks: list[Any] | None = None
) -> Any:
    """An ``SFTTrainer`` for the round (``model_setup.preflight`` has checked the setup)."""
    from trl import SFTTrainer

    settings = recipe.training
    quiet_transformers_local_bars()  # the round's own progress is tapir's step lines
    tokenizer = load_tokenizer(spec.start_model, recipe)
    dataset = load_round(spec.data_path, spec.name)
    run_name = f"{recipe.name}/{spec.name}"
    config = sft_config(settings, spec.checkpoint_dir, recipe.seed, tokenizer.eos_token, run_name)
    if "tensorboard" in settings.report_to:  # the callback reads its folder from here only
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(spec.folder / TENSORBOARD_DIR)
    return SFTTrainer(
        model=spec.start_model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(settings),
        callbacks=[
            TrainingLog(spec.folder / LOG_FILE, spec.name, console),
            NoFinalCheckpoint(),
            *(callbacks or []),
        ],
    )


def train_round(
    recipe: Recipe,
    spec: RoundSpec,
    console: Console | None = None,
    callbacks: list[Any] | None = None,
    identity: dict[str, Any] | None = None,
    owner: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) one round and save its model to ``spec.model_dir``; returns metrics."""
    trainer = build_trainer(recipe, spec, console, callbacks)
    resume = last_checkpoint(spec)
    result = trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    metrics = dict(result.metrics)
    tokens = int(state.num_input_tokens_seen or 0)
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    metrics.update(
        {
            "global_step": state.global_step,
            "resumed_from": Path(resume).name if resume else None,
            "num_input_tokens_seen": tokens,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "rows": len(trainer.train_dataset) if not recipe.training.packing else None,
        }
    )
    save_model(trainer, spec, identity, owner)
    if not recipe.training.keep_checkpoints and trainer.is_world_process_zero():
        shutil.rmtree(spec.checkpoint_dir, ignore_errors=True)
    return metrics


def save_model(
    trainer: Any, spec: RoundSpec, identity: dict[str, Any] | None = None, owner: int | None = None
) -> None:
    """Save a plain model + tokenizer atomically: the next round loads it as is.

    ``trainer.save_model`` runs on every process (it gathers ZeRO-3/FSDP shards); LoRA adapters
    are then merged into the round's starting weights on the main process. ``identity`` (round
    name and run key) goes into the folder so a response cache can tell two trainings saved at
    the same path apart.
    """
    # Every process, on every machine, saves into the same staging folder: it is named after
    # ``owner`` (the orchestrator that launched the round, default this process's launcher), and
    # is stale once that process is gone. The main rank empties it before anyone writes there.
    owner = owner or os.getppid()
    staging = staging_path(spec.model_dir, owner=owner)
    if trainer.is_world_process_zero():
        staging = staging_dir(spec.model_dir, owner=owner)  # the same path, emptied
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    if not trainer.is_world_process_zero():
        return
    if (staging / "adapter_config.json").is_file():
        _merge_adapter(staging)
    if identity is not None:
        (staging / CHECKPOINT_ID).write_text(json.dumps(identity, indent=2), encoding="utf-8")
    swap_into_place(staging, spec.model_dir)


def _merge_adapter(folder: Path) -> None:
    """The adapter's base (recorded in adapter_config.json) with the adapter merged in."""
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype="auto").merge_and_unload()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        (folder / name).unlink(missing_ok=True)
    merged.save_pretrained(folder)
