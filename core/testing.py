"""A deterministic distilabel LLM for the fast test tier.

It answers each kind of tapir prompt with well-formed text derived from a hash of the prompt,
and with *malformed* text when the instruction contains a trigger word, so tests can check
that failures are counted and excluded. It lives in the package, not in tests/, because
distilabel unpickles steps in worker processes that must be able to import it. The real
embedded model covers the same graph in the ``slow`` tier.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from distilabel.models.llms.base import LLM
from pydantic import validate_call

from tapir.llms import UsageLoggingMixin

MALFORMED = "MALFORMED"  # instructions containing it get unparseable judge/classifier answers
EMPTY = "EMPTYANSWER"  # instructions containing it get an empty teacher response


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class ScriptedLLM(UsageLoggingMixin, LLM):
    """Answers by role: teacher scores high, student lower, judge grades, classifier labels."""

    labels: list[str] = []

    def load(self) -> None:
        super().load()

    @property
    def model_name(self) -> str:
        return f"scripted-{self.role}"

    def _answer(self, prompt: str) -> str:
        h = _digest(f"{self.model_id}|{prompt}")
        if "Rating: [[" in prompt:  # judge
            if MALFORMED in prompt:
                return "The answer is fine, I suppose."
            is_teacher = "[teacher]" in prompt
            score = 7 + h % 4 if is_teacher else 2 + h % 8
            return f"The answer is adequate. Rating: [[{score}]]"
        if "Best Model Identifier" in prompt:  # AlpacaEval pairwise judge
            if MALFORMED in prompt:
                return "Both outputs have merits."
            return "m" if h % 2 else "M"
        if "Categories:" in prompt:  # classifier
            if MALFORMED in prompt:
                return "I am not sure what this is."
            request = prompt.split("Request:", 1)[-1].lower()
            for label in sorted(self.labels, key=len, reverse=True):
                if label.lower() in request:
                    return label
            return self.labels[h % len(self.labels)] if self.labels else "Others"
        if "Write one new instruction" in prompt:  # expansion
            return f"Describe a new problem number {h % 1000} in the same style and explain it."
        if "Original answer:" in prompt:  # refinement
            return f"An improved, well structured answer (v{h % 97})."
        if EMPTY in prompt and self.role == "teacher":
            return ""
        return f"[{self.role}] answer {h % 10_000} to the request."

    @validate_call
    def generate(  # type: ignore[override]
        self, inputs: list[Any], num_generations: int = 1, max_new_tokens: int = 128, temperature: float = 0.0
    ) -> list[dict[str, Any]]:
        outputs = []
        for conversation in inputs:
            prompt = "\n".join(m["content"] for m in conversation)
            answers = [self._answer(f"{prompt}#{i}" if i else prompt) for i in range(num_generations)]
            outputs.append(
                {
                    "generations": answers,
                    "statistics": {
                        "input_tokens": [len(prompt.split())] * num_generations,
                        "output_tokens": [len(a.split()) for a in answers],
                    },
                }
            )
        return outputs


# --- a tiny student for the training tests ---------------------------------------------------

TINY_SPECIALS = ["<bos>", "<eos>", "<pad>"]


def build_tiny_student(folder: Path, corpus: list[str], seed: int = 0, context: int = 512) -> Path:
    """A randomly initialised ~0.2M-parameter Llama with a byte-level BPE tokenizer trained on
    ``corpus``, tapir's chat template and EOS aligned: a real transformers model that trains in
    seconds on a CPU, built offline from a config."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tapir.embedded import chat_template_path

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
        num_attention_heads=4,
        num_key_value_heads=2,
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
