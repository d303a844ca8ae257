"""User-facing errors: one line that names the field or file at fault."""

from __future__ import annotations

import errno


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


#: What the machine, not tapir or the input, refused: the disk, the file system, permissions.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EMFILE: "too many open files",
}


def is_disk_full(error: BaseException) -> bool:
    """A full disk, however the layer that met it says so (OSError, sqlite's OperationalError)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    return "disk is full" in text or "no space left on device" in text


def os_error_line(error: BaseException) -> str | None:
    """One line for an error the machine raised (full disk, read-only, permission), naming the
    file; None for any other error (a bug, which keeps its traceback)."""
    if is_disk_full(error):
        where = getattr(error, "filename", None)
        return (
            f"{where or 'a file tapir was writing'}: the disk is full; free some space and run again "
            "(a finished output is only replaced by a finished one)"
        )
    if not isinstance(error, OSError) or error.errno not in _ENVIRONMENT_ERRNOS:
        return None
    where = error.filename or "a file"
    return f"{where}: {_ENVIRONMENT_ERRNOS[error.errno]} ({error.strerror})"
