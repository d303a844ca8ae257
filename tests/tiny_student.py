"""Helpers for tapir's tests that ship with the package: the trigger words of the scripted
simulator (``tapir.serving.simulator``) and a tiny trainable student built offline from a config."""

from __future__ import annotations

from pathlib import Path

from tapir.serving.simulator import EMPTY, HANG_MARKER, MALFORMED

__all__ = ["EMPTY", "HANG_MARKER", "MALFORMED", "TINY_SPECIALS", "build_tiny_student"]

# --- a tiny student for the training tests ---------------------------------------------------

TINY_SPECIALS = ["<bos>", "<eos>", "<pad>"]


def build_tiny_student(
    folder: Path, corpus: list[str], seed: int = 0, context: int = 512, heads: int = 4
) -> Path:
    """A randomly initialised ~0.2M-parameter Llama with a byte-level BPE tokenizer trained on
    ``corpus``, tapir's chat template and EOS aligned: a real transformers model that trains in
    seconds on a CPU, built offline from a config. ``heads=2`` gives 32-wide heads, the narrowest
    vLLM's CPU attention serves (4 heads: 16)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tapir.serving.embedded import chat_template_path

    folder = Path(folder)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=TINY_SPECIALS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    tokenizer.chat_template = chat_template_path().read_text(encoding="utf-8")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
