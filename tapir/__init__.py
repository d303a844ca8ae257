"""tapir: distil a teacher LLM's instruction following into a small student with TAPIR.

The stage packages mirror the data flow: ``tapir.pipelines`` (curated curriculum data),
``tapir.training`` (staged SFT) and ``tapir.evaluation`` (AlpacaEval 2.0 / MT-Bench). This
package holds only what they share: the recipe schema, the LLM factory and the manifest.
"""

__version__ = "0.1.0"
