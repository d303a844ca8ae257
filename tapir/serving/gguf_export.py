"""A trained checkpoint back to GGUF, so llama.cpp serves it like the model it was trained from.

The closed loop asks each new checkpoint for answers to the whole pool, and evaluation asks it
again. On a CPU, llama.cpp makes about 1.6x the output tokens/s of batched transformers on the
embedded model (BENCHMARKS.md), and the first pass's student answers came from llama.cpp, so a
re-score through transformers costs several times the first pass.

llama.cpp's own ``convert_hf_to_gguf.py`` is not installed with llama-cpp-python (it lives in the
source tree only). A student born from a GGUF needs none of its work: the source GGUF already
holds everything but the weights (architecture keys, the tokenizer, its scores and special
tokens). So we copy that GGUF's metadata, write the checkpoint's tensors under the GGUF names
transformers itself read them from (``get_gguf_hf_weights_map``: the same map, run backwards),
undo transformers' load-time value transform, and let llama.cpp quantize the F16 file to the
source's type with ``llama_model_quantize`` (the library's quantizer, not ours).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tapir.errors import TrainingError
from tapir.native_output import native_output_to, quiet_transformers_local_bars
from tapir.staging import atomic_file

# llama.h's llama_ftype values for the quantizations we offer (the source GGUF's own is Q4_K_M).
FTYPES = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}
DEFAULT_QUANTIZATION = "Q4_K_M"
MARKER_SUFFIX = ".source.json"


def gguf_for_checkpoint(
    checkpoint: Path, reference: Path, target: Path, quantization: str = DEFAULT_QUANTIZATION
) -> Path:
    """``target`` (a GGUF of ``checkpoint``), written once; reused while the checkpoint is unchanged."""
    marker = target.with_name(target.name + MARKER_SUFFIX)
    source = _fingerprint(checkpoint, reference, quantization)
    if target.is_file() and marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == source:
        return target
    export_gguf(checkpoint, reference, target, quantization)
    marker.write_text(json.dumps(source, indent=2), encoding="utf-8")
    return target


def _fingerprint(checkpoint: Path, reference: Path, quantization: str) -> dict[str, Any]:
    weights = sorted(checkpoint.glob("*.safetensors")) + sorted(checkpoint.glob("*.bin"))
    return {
        "checkpoint": str(checkpoint.resolve()),
        "weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights],
        "reference": str(reference.resolve()),
        "quantization": quantization,
    }


def export_gguf(
    checkpoint: Path, reference: Path, target: Path, quantization: str = DEFAULT_QUANTIZATION
) -> Path:
    """Write ``checkpoint``'s weights as a GGUF with ``reference``'s metadata; atomic."""
    if quantization not in FTYPES:
        raise TrainingError(f"gguf export: quantization {quantization!r} is not one of {', '.join(FTYPES)}")
    with atomic_file(target) as partial:
        if quantization == "F16":
            _write_f16(checkpoint, reference, partial)
        else:
            f16 = partial.with_name(partial.name + ".f16")
            try:
                _write_f16(checkpoint, reference, f16)
                _quantize(f16, partial, FTYPES[quantization], target.with_name(f"{target.stem}.export.log"))
            finally:
                f16.unlink(missing_ok=True)
    return target


def _write_f16(checkpoint: Path, reference: Path, out: Path) -> None:
    import gguf
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    reader = gguf.GGUFReader(str(reference))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    quiet_transformers_local_bars()
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    model_type = model.config.model_type.removesuffix("_text")
    if model_type != arch:
        raise TrainingError(
            f"gguf export: {checkpoint} is a {model_type} model but {reference.name} holds {arch}; "
            "the reference must be the GGUF the student came from"
        )
    processor_class = TENSOR_PROCESSORS.get(arch, TensorProcessor)
    shift = _norm_shift(processor_class)
    name_map = get_gguf_hf_weights_map(model, processor_class())
    state = model.state_dict()

    writer = gguf.GGUFWriter(str(out), arch=arch)
    rewritten = (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in rewritten:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(FTYPES["F16"])

    for tensor in reader.tensors:
        hf_name = name_map.get(tensor.name)
        if hf_name is None or hf_name not in state:
            raise TrainingError(f"gguf export: {checkpoint} has no weight for GGUF tensor {tensor.name}")
        data = state[hf_name].detach().to(torch.float32).numpy()
        expected = tuple(int(n) for n in reversed(tensor.shape))
        if data.shape != expected:
            raise TrainingError(
                f"gguf export: {hf_name} has shape {data.shape}; {reference.name} "
                f"wants {expected} for {tensor.name}"
            )
        if shift and "norm.weight" in tensor.name:
            data = data + shift  # transformers subtracted it when it read the GGUF
        writer.add_tensor(tensor.name, data.astype(np.float32 if data.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _norm_shift(processor_class: Any) -> float:
    """How to undo transformers' GGUF value transform: Gemma's processors store RMSNorm weights
    as ``w - 1`` (llama.cpp keeps ``1 + w``); the default processor changes nothing. Others
    (LLaMA's q/k permutation, ...) are refused rather than written wrong."""
    from transformers.modeling_gguf_pytorch_utils import Gemma2TensorProcessor, TensorProcessor

    if processor_class is TensorProcessor:
        return 0.0
    if issubclass(processor_class, Gemma2TensorProcessor) or processor_class.__name__.startswith("Gemma"):
        return 1.0
    raise TrainingError(
        f"gguf export: {processor_class.__name__} transforms weights tapir cannot invert; "
        "set training.rescore_backend to transformers (or vllm on GPUs)"
    )


def _quantize(source: Path, out: Path, ftype: int, log: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    with native_output_to(log):  # llama.cpp's loader and quantizer print hundreds of lines
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if code != 0 or not out.is_file():
        raise TrainingError(f"gguf export: llama.cpp could not quantize {source.name} (code {code})")


def write_chat_template(checkpoint: Path, gguf: Path) -> Path | None:
    """The chat template saved with ``checkpoint``'s tokenizer, as a file beside ``gguf`` for
    llama.cpp's server (``<gguf stem>.chat_template.jinja``); None when the tokenizer has none.
    Raises OSError when no tokenizer loads from ``checkpoint``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    if not tokenizer.chat_template:
        return None
    target = gguf.with_name(gguf.stem + ".chat_template.jinja")
    if not target.is_file() or target.read_text(encoding="utf-8") != tokenizer.chat_template:
        target.write_text(tokenizer.chat_template, encoding="utf-8")
    return target
