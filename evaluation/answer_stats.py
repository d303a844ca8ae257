"""What an evaluated model's answers show without a judge: whether they end, how long they are,
and whether they keep to the chat format.

A small judge grades noisily; these move on their own. A base student runs on to the token cap
and starts the next turn by itself (``### Instruction:`` in tapir's template); a student that
learned the format ends its answer with EOS. So every answer carries how many tokens it took
and whether it ended before the cap (``GeneratedText``), and each benchmark reports:

- ``ends_rate``: the share of answers that ended (EOS) before ``max_new_tokens``;
- ``mean_tokens``: their mean length in tokens (``mean_words`` beside it);
- ``in_format``: the share that stay one assistant turn: no turn marker of tapir's template and
  no role tag of a common chat template inside the answer.

Answers are generated without stop strings for this reason (a stop string would end a runaway
answer for the model and hide what it learned).
"""

from __future__ import annotations

import re
import statistics
from typing import Any

#: Where an answer starts another turn instead of ending its own: tapir's template's headers and
#: the role tags of the chat templates students are commonly trained on.
TURN_MARKER = re.compile(
    r"###\s*(Instructions?|Response|Input)\s*:"
    r"|<\|im_start\|>|<\|im_end\|>|<start_of_turn>|<end_of_turn>|\[INST\]|<\|user\|>|<\|assistant\|>"
    r"|^\s*(User|Human|Assistant)\s*:",
    re.IGNORECASE | re.MULTILINE,
)


class GeneratedText(str):
    """An answer's text, with how many tokens it took and whether it ended before the cap (None
    when unknown, e.g. an answer cached before tapir recorded it)."""

    output_tokens: int | None
    ended: bool | None

    def __new__(cls, text: str, output_tokens: int | None = None, ended: bool | None = None) -> GeneratedText:
        made = super().__new__(cls, text)
        made.output_tokens, made.ended = output_tokens, ended
        return made

    def record(self) -> dict[str, Any]:
        """How the answer cache keeps it."""
        return {"text": str(self), "output_tokens": self.output_tokens, "ended": self.ended}

    @classmethod
    def from_record(cls, record: Any) -> GeneratedText:
        if isinstance(record, dict):
            return cls(record["text"], record.get("output_tokens"), record.get("ended"))
        return cls(str(record))  # a bare text: lengths unknown


def in_format(text: str) -> bool:
    """The answer is one assistant turn: it does not run on into another turn."""
    return TURN_MARKER.search(text) is None


def answer_stats(answers: list[Any]) -> dict[str, Any]:
    """Ends-rate, mean length and in-format share of one benchmark's answers."""
    ended = [a.ended for a in answers if getattr(a, "ended", None) is not None]
    tokens = [a.output_tokens for a in answers if getattr(a, "output_tokens", None) is not None]
    return {
        "answers": len(answers),
        "ends_rate": sum(ended) / len(ended) if ended else None,
        "ends_known": len(ended),
        "mean_tokens": statistics.fmean(tokens) if tokens else None,
        "mean_words": statistics.fmean(len(str(a).split()) for a in answers) if answers else None,
        "in_format": sum(in_format(str(a)) for a in answers) / len(answers) if answers else None,
    }
