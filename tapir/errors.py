"""User-facing errors: one line that names the field or file at fault."""


class TapirError(Exception):
    """An error caused by the user's input (recipe, data, endpoint), not by a bug.

    The CLI prints ``str(error)`` as a single line and exits non-zero, without a traceback,
    so the message must name the field or file and say what is wrong with it.
    """


class RecipeError(TapirError):
    """The recipe (YAML or a ``--set`` override) is invalid."""


class DataError(TapirError):
    """An input dataset is missing, unreadable or lacks what the pipeline needs."""


class EndpointError(TapirError):
    """A model endpoint named in the recipe cannot be reached or used."""


class TrainingError(TapirError):
    """A training setup that cannot work, found before any weight is loaded or changed."""


class EvaluationError(TapirError):
    """A model, benchmark file or judge that evaluation cannot use."""


class IncompleteRunError(TapirError):
    """The run finished and wrote its output, but LLM calls failed for good (after retries).

    Its own exit status (3) lets a script tell "rerun me" from "fix your input" (2).
    """

    exit_code = 3
