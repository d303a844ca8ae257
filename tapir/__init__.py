"""tapir: distil a teacher LLM's instruction following into a small student with TAPIR.

The stage packages mirror the data flow: ``tapir.pipelines`` (curated curriculum data),
``tapir.training`` (staged SFT) and ``tapir.evaluation`` (AlpacaEval 2.0 / MT-Bench), with
``tapir.review`` (Argilla spot-checks) and ``tapir.publishing`` (card, Hub) beside them. This
package's own modules are what they share: the recipe schema, the LLM factory and engines, the
stage contract (``stage_contract``: the files one stage hands the next) and its atomic writer.
"""

__version__ = "0.1.0"
