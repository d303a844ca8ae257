"""The embedded GGUF student becomes a transformers folder that TRL can train (slow tier); `make
train` on it runs in tests/test_clean_clone_slow.py."""

import pytest

from tapir.serving.embedded_student import materialize_embedded_student

pytestmark = pytest.mark.slow


def test_embedded_student_converts_once_with_our_template_and_eos(embedded_student):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache, folder = embedded_student
    marker = (folder / "tapir_conversion.json").stat().st_mtime
    assert materialize_embedded_student(cache) == folder  # cached: not converted again
    assert (folder / "tapir_conversion.json").stat().st_mtime == marker

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert 250e6 < sum(p.numel() for p in model.parameters()) < 300e6
    assert (
        model.generation_config.eos_token_id
        == tokenizer.eos_token_id
        == tokenizer.convert_tokens_to_ids("<eos>")
    )

    # The chat template marks exactly the assistant turn (and its EOS) for the loss.
    messages = [
        {"role": "user", "content": "Add 2 and 2."},
        {"role": "assistant", "content": "The answer is 4."},
    ]
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    kept = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(kept) == "The answer is 4.<eos>"
    assert tokenizer.decode(encoded["input_ids"]).startswith("<bos>### Instruction:\nAdd 2 and 2.")

    # The converted weights are the GGUF's: greedy generation gives real text.
    prompt = tokenizer.apply_chat_template(
        messages[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(output[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(text.split()) >= 3
