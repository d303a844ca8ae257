"""Turn the embedded GGUF student into a transformers model folder, once, and cache it.

TRL trains transformers models; the embedded Gemma 3 270M ships only as a Q4_K_M GGUF.
transformers can de-quantize a GGUF (about 30 s here) but refuses to save a model loaded that
way, so we rebuild a plain model from its config, copy the de-quantized weights, install
tapir's chat template (the one the data pipeline prompted with) and align EOS between the
tokenizer and the generation config, so the trained student stops where training taught it to.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tapir.manifest import now_utc
from tapir.native_output import gguf_conversion_bar_off, quiet_transformers_local_bars
from tapir.serving.embedded import (
    EMBEDDED_MODEL_ID,
    chat_template_path,
    embedded_gguf_path,
    embedded_gguf_sha256,
)
from tapir.staging import atomic_folder

CONVERTED_NAME = "gemma-3-270m-hf"
MARKER = "tapir_conversion.json"


def converted_student_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "models" / CONVERTED_NAME


def materialize_embedded_student(cache_dir: str | Path, dtype: str = "float32") -> Path:
    """The embedded student as a transformers folder under ``cache_dir`` (converted on first use)."""
    target = converted_student_dir(cache_dir)
    template_text = chat_template_path().read_text(encoding="utf-8")
    marker = target / MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded.get("dtype") == dtype and recorded.get("chat_template") == template_text:
            return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers_local_bars()
    gguf = embedded_gguf_path(cache_dir)
    torch_dtype = getattr(torch, dtype)
    with gguf_conversion_bar_off():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        source = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype
        )
    config = copy.deepcopy(source.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion lost weights: missing={missing[:3]} unexpected={unexpected[:3]}")
    model.tie_weights()

    tokenizer.chat_template = template_text
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    with atomic_folder(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(
            json.dumps(
                {
                    "source": EMBEDDED_MODEL_ID,
                    "gguf_sha256": embedded_gguf_sha256(),  # verified by embedded_gguf_path
                    "dtype": dtype,
                    "chat_template": template_text,
                    "created": now_utc(),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return target
