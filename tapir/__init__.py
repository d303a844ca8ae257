"""tapir: distil a teacher LLM's instruction following into a small student with TAPIR.

The stage packages mirror the data flow: ``tapir.pipelines`` (curated curriculum data),
``tapir.training`` (staged SFT) and ``tapir.evaluation`` (AlpacaEval 2.0 / MT-Bench). They meet
only through the rooms they share: this package's own modules (the recipe schema, the stage
contract and its atomic writer, benchmark sources), ``tapir.serving`` (engines and clients),
``tapir.review`` (Argilla spot-checks) and ``tapir.publishing`` (cards, Hub). The verbs in
``tapir.commands`` are the one place the stages are used together.
"""

__version__ = "0.1.0"
