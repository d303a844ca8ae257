"""The embedded GGUF student becomes a transformers folder that TRL can train (slow tier)."""

from pathlib import Path

import pytest

from tapir.embedded_student import materialize_embedded_student

pytestmark = pytest.mark.slow


def test_embedded_student_converts_once_with_our_template_and_eos(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = materialize_embedded_student(tmp_path)
    marker = (folder / "tapir_conversion.json").stat().st_mtime
    assert materialize_embedded_student(tmp_path) == folder  # cached: not converted again
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


def test_embedded_student_trains_one_round_with_the_default_recipe(tmp_path):
    """`make train`'s path on the real embedded student: the default recipe's training
    section, converted once from the GGUF, one round, a checkpoint that loads and differs."""
    import json

    import datasets
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from tapir.recipe import load_recipe
    from tapir.training.rounds import run_training

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Give a number greater than {n}."},
                {"role": "assistant", "content": f"{n + 1} is greater than {n}."},
            ]
        }
        for n in range(4)
    ]
    data = tmp_path / "data-run"
    (data / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(data / "data" / "round_1.parquet"))
    (data / "manifest.json").write_text("{}")
    recipe = load_recipe(
        Path(__file__).resolve().parents[1] / "recipes" / "default.yaml",
        [
            f"output_dir={data}",
            f"cache_dir={tmp_path / 'cache'}",
            "curriculum.rounds=1",
            "curriculum.hard_share=[0.5]",
            "training.max_steps=1",  # the default recipe has no LR warm-up: step 1 trains
        ],
    )
    train_dir = run_training(recipe, Console(quiet=True))
    manifest = json.loads((train_dir / "round_1" / "manifest.json").read_text())
    assert manifest["metrics"]["global_step"] == 1 and manifest["metrics"]["final_loss"] > 0
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "cache" / "models" / "gemma-3-270m-hf")
    trained = AutoModelForCausalLM.from_pretrained(train_dir / "round_1" / "model")
    layer = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[layer], trained.state_dict()[layer])
