"""A trained embedded checkpoint written back to GGUF carries its own weights and serves (slow tier)."""

from collections import Counter

import pytest

from tapir.recipe import ModelSpec
from tapir.serving.embedded import chat_template_path, embedded_gguf_path
from tapir.serving.engines import EngineSet
from tapir.serving.gguf_export import gguf_for_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, embedded_student):
    """The converted embedded student with weights changed as training would change them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = tmp_path_factory.mktemp("export")
    cache, source = embedded_student
    (work / "cache").symlink_to(cache)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.add_(0.25)  # a norm: stored shifted by one in GGUF
        model.model.layers[3].mlp.down_proj.weight.mul_(1.5)
    checkpoint = work / "round_1" / "model"
    model.save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(source).save_pretrained(checkpoint)
    return work, checkpoint, model.state_dict()


def test_f16_export_reads_back_as_the_checkpoint(trained):
    """transformers, reading the GGUF with its own loader, gets the checkpoint's weights back:
    every tensor name, shape and value (to F16 precision), the changed ones included."""
    import torch
    from transformers import AutoModelForCausalLM

    work, checkpoint, expected = trained
    out = gguf_for_checkpoint(checkpoint, embedded_gguf_path(work / "cache"), work / "model-F16.gguf", "F16")
    back = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32)
    back = back.state_dict()
    assert back.keys() == expected.keys()
    for name, weight in expected.items():
        assert back[name].shape == weight.shape, name
        assert torch.allclose(back[name], weight, rtol=2e-3, atol=2e-3), name


def test_quantized_export_matches_the_source_types_is_reused_and_serves(trained):
    import gguf

    work, checkpoint, _ = trained
    reference = embedded_gguf_path(work / "cache")
    out = gguf_for_checkpoint(checkpoint, reference, work / "model-Q4_K_M.gguf")
    types = Counter(t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors)
    assert types == Counter(t.tensor_type.name for t in gguf.GGUFReader(str(reference)).tensors)
    written = out.stat().st_mtime_ns
    assert gguf_for_checkpoint(checkpoint, reference, out) == out
    assert out.stat().st_mtime_ns == written  # unchanged checkpoint: not exported again

    spec = ModelSpec(backend="llamacpp", model=str(out), chat_template=str(chat_template_path()))
    with EngineSet(work / "cache") as engines:
        engine = engines.ensure(spec, "student")
        engines.start()
        from openai import OpenAI

        client = OpenAI(base_url=engine.base_url, api_key="none")
        reply = client.chat.completions.create(
            model=engine.served_name,
            messages=[{"role": "user", "content": "Name three colours."}],
            max_tokens=16,
            temperature=0,
        )
    assert reply.choices[0].message.content.strip()
