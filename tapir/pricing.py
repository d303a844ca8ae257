"""What tokens cost: one formula for the dry-run's estimate, the live progress, the cap and the
summaries (prices are $ per million tokens, ``{input: …, output: …}``)."""

from __future__ import annotations


def usd(price: dict[str, float] | None, input_tokens: float, output_tokens: float) -> float:
    """The cost of these tokens at ``price`` (0 when unpriced)."""
    if not price:
        return 0.0
    return (input_tokens * price.get("input", 0.0) + output_tokens * price.get("output", 0.0)) / 1e6
