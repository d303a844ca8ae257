"""The ``tapir`` command: the user's verbs, each reading one recipe.

User errors (bad recipe, missing file, unreachable endpoint) print one line naming the field
or file and exit with status 2; no traceback, no half-written output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from rich.console import Console

from tapir import __version__
from tapir.commands import ablate, data, distill, evaluate, init, push, recipe, review, train
from tapir.errors import TapirError, is_disk_full, os_error_line
from tapir.lifeline import children_die_with_this_process
from tapir.redaction import scrub_standard_streams
from tapir.run_lock import release_all
from tapir.scratch import private_tmp

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


#: The verbs, in the order ``tapir --help`` lists them; each module registers its parser and runs.
VERBS = {
    "data": data,
    "train": train,
    "distill": distill,
    "ablate": ablate,
    "eval": evaluate,
    "review": review,
    "push": push,
    "recipe": recipe,
    "init": init,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapir", description="TAPIR distillation: data, train, eval.")
    parser.add_argument("--version", action="version", version=f"tapir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS.values():
        verb.register(sub)
    return parser


#: Width of tables written to a pipe or file: rich would assume 80 columns and cut names short.
PIPED_WIDTH = 200


def _piped_width() -> int | None:
    """None on a terminal (rich measures it); else $COLUMNS or a width no table is cut at."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else PIPED_WIDTH


def _quiet_libraries() -> None:
    # datasets' "Generating train split" bars (distilabel builds its result with them) would come
    # between tapir's own tables; its workers inherit the setting
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    for name in ("httpx", "datasets"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # its "Retrying in 8s [Retry 5/5]" lines would come before tapir's own one-line error (the
    # variable reaches the worker processes that download too)
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def _refuse_nul_bytes(args: argparse.Namespace) -> None:
    """No flag's value may hold a NUL byte: no path, name or model id can."""
    for name, value in vars(args).items():
        if name == "overrides":
            continue  # --set names the field itself (tapir.recipe.apply_overrides)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in values):
            flag = "--" + name.rstrip("_").replace("_", "-")
            raise TapirError(f"{flag}: holds a NUL byte, which no path, name or model id may")


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _refuse_nul_bytes(args)
    as_json = bool(getattr(args, "json", False) and getattr(args, "dry_run", False))
    console = Console(stderr=False, quiet=as_json, width=_piped_width())
    _quiet_libraries()
    return VERBS[args.command].run(args, console, as_json)


def main(argv: list[str] | None = None) -> None:
    children_die_with_this_process()  # workers and engines end with tapir, even on SIGKILL
    scrub_standard_streams()  # no key the recipe names is ever printed, whoever prints it
    try:
        with private_tmp():  # temporary files of this command and its children go with it
            code = run(argv)
    except TapirError as error:
        print(f"tapir: error: {error}", file=sys.stderr)
        code = getattr(error, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("tapir: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except OSError as error:
        line = os_error_line(error)
        if line is None:
            raise
        print(f"tapir: error: {line}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except ValueError as error:  # a path given on the command line with a NUL byte in it
        if "embedded null byte" not in str(error):
            raise
        print("tapir: error: a path on the command line holds a NUL byte", file=sys.stderr)
        code = EXIT_USER_ERROR
    except Exception as error:  # sqlite3 (the response cache) says "disk is full" its own way
        if not is_disk_full(error):
            raise
        print(f"tapir: error: {os_error_line(error)}", file=sys.stderr)
        code = EXIT_USER_ERROR
    finally:
        release_all()  # the locks on this command's outputs (the kernel would, at exit)
    sys.exit(code)


if __name__ == "__main__":
    main()
