"""``tapir push``: a curated dataset to the Hugging Face Hub, with our card.

The upload is built as a folder first: data files, the run's recipe, manifest and summary, the
plots, pulled review reports, and a README card rendered with the round's real figures.
``--dry-run`` stops there and leaves that folder (exactly what would be uploaded); otherwise
``huggingface_hub`` creates the repo (private by default) and uploads the folder in one commit.

The token is checked before anything is built: missing, rejected or read-only tokens, and
namespaces the token cannot write to, each fail with one line naming the variable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from tapir.errors import DataError, EndpointError, RecipeError
from tapir.manifest import contains_secret, error_line, scrub
from tapir.publishing.card import data_files, write_card
from tapir.recipe import Recipe
from tapir.stage_contract import MANIFEST, DataRun, ReviewRun, finished_data_run, split_for
from tapir.staging import atomic_folder, claim_output, mark_output

RUN_FILES = ("recipe.yaml", MANIFEST, "summary.json")
Built = TypeVar("Built")


def hub_token(recipe: Recipe) -> str:
    """The token from the recipe's variable (HF_TOKEN), else huggingface_hub's saved login."""
    token = os.environ.get(recipe.hub.token_env)
    if not token and recipe.hub.token_env == "HF_TOKEN":
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise RecipeError(
            f"hub.token_env: ${recipe.hub.token_env} is not set (export a Hugging Face token with write "
            "access, or run `hf auth login`)"
        )
    return token


def check_write_access(token: str, repo_id: str, token_env: str) -> str:
    """Ask the Hub who the token is and refuse before building if it cannot write ``repo_id``."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi().whoami(token=token)
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status == 401:
            raise EndpointError(
                f"hub.token_env: ${token_env} was rejected by the Hub (invalid or expired)"
            ) from None
        raise EndpointError(f"hub: whoami failed ({error_line(error)})") from None
    except Exception as error:  # connection errors come as several requests/httpx types
        raise EndpointError(f"hub: cannot reach the Hugging Face Hub ({error_line(error)})") from None

    user = info.get("name", "")
    namespace = repo_id.split("/")[0]
    access = (info.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    if role == "read":
        raise EndpointError(
            f"hub.token_env: ${token_env} is a read-only token; {repo_id} needs a write token"
        )
    if role == "fineGrained":
        grants = (access.get("fineGrained") or {}).get("scoped") or []
        allowed = any(
            (g.get("entity") or {}).get("name") == namespace and "repo.write" in (g.get("permissions") or [])
            for g in grants
        )
        if not allowed:
            raise EndpointError(
                f"hub.token_env: ${token_env} (fine-grained) has no repo.write permission on {namespace!r}"
            )
    orgs = {o.get("name"): o.get("roleInOrg") for o in info.get("orgs") or []}
    if namespace != user and namespace not in orgs:
        raise EndpointError(f"hub.repo_id: {user!r} cannot write to {namespace!r} (not a member of that org)")
    if orgs.get(namespace) == "read":
        raise EndpointError(f"hub.repo_id: {user!r} has read-only access to the org {namespace!r}")
    return user


def _selected_files(recipe: Recipe, summary: dict[str, Any], round_: int | str) -> list[str]:
    if str(round_) == "all":
        return data_files(recipe, summary)
    return [DataRun(recipe.resolved_output_dir).relative(split_for(round_))]


def assert_no_secret(folder: Path) -> None:
    """Last line of defence: no credential from the environment in any file we would upload."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and contains_secret(path.read_bytes()):
            raise DataError(f"hub: {path.relative_to(folder)} contains a credential; nothing was uploaded")


def build_upload(recipe: Recipe, round_: int | str, target: Path) -> list[str]:
    """Write the upload into ``target`` (created if missing); returns the data files included."""
    run = recipe.resolved_output_dir
    manifest = finished_data_run(run, "publishing it").model_dump(mode="json")
    summary_path = DataRun(run).summary_file
    if not summary_path.is_file():
        raise DataError(f"{run}: no finished data run here (run `make data` first)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    files = _selected_files(recipe, summary, round_)
    missing = [f for f in files if not (run / f).is_file()]
    if missing:
        raise DataError(f"{run}: missing {', '.join(missing)} (check --round against the curriculum)")

    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / name, target / name)
    for name in RUN_FILES:
        if (run / name).is_file():
            (target / name).write_text(scrub((run / name).read_text(encoding="utf-8")), encoding="utf-8")
    plots = []
    for plot in summary.get("plots") or []:
        if (run / plot).is_file():
            (target / plot).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / plot, target / plot)
            plots.append(plot)
    review = ReviewRun(recipe.resolved_review_dir)
    agreements = review.agreements()
    for split in agreements:
        source = review.split_dir(split)
        for name in ReviewRun.REPORTS:
            if (source / name).is_file():
                (target / "review" / split).mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / name, target / "review" / split / name)
    write_card(
        target / "README.md", recipe, summary, manifest, files=files, agreements=agreements, plots=plots
    )
    assert_no_secret(target)
    return files


def push(
    recipe: Recipe,
    console: Console,
    repo_id: str | None = None,
    round_: int | str | None = None,
    dry_run: bool = False,
    to: str | None = None,
    private: bool | None = None,
) -> Path | str:
    """Push (or with ``dry_run`` write locally) a curated round; returns the folder or the repo URL."""
    repo_id = repo_id or recipe.hub.repo_id
    round_ = round_ if round_ is not None else recipe.hub.round
    private = recipe.hub.private if private is None else private
    if dry_run:
        folder = Path(to) if to else recipe.resolved_hub_dir
        files = write_local_upload(
            folder, "--to" if to else "hub.output_dir", lambda at: build_upload(recipe, round_, at)
        )
        console.print(
            f"[bold]dry run[/]: wrote what would go to {repo_id or '(hub.repo_id not set)'} "
            f"({'private' if private else 'public'}) into {folder}: {', '.join(files)}"
        )
        return folder

    if not repo_id:
        raise RecipeError("hub.repo_id: not set (give --repo-id org/name or set hub.repo_id)")
    files, url, user = upload(
        recipe,
        repo_id,
        "dataset",
        private,
        lambda at: build_upload(recipe, round_, at),
        lambda _: f"tapir push: {recipe.name} ({round_})",
    )
    console.print(f"[green]pushed[/] {', '.join(files)} to {repo_id} as {user} ({url})")
    return url


def write_local_upload(folder: Path, field: str, build: Callable[[Path], Built]) -> Built:
    """``--dry-run``: ``build`` the upload into ``folder``, replaced whole and only if it is a
    folder tapir wrote (``field`` names the setting that chose it)."""
    claim_output(folder, "push", field)
    with atomic_folder(folder) as staging:
        built = build(staging)
        mark_output(staging, "push")
    return built


def upload(
    recipe: Recipe,
    repo_id: str,
    repo_type: str,
    private: bool,
    build: Callable[[Path], Built],
    message: Callable[[Built], str],
) -> tuple[Built, str, str]:
    """Check the token can write ``repo_id``, ``build`` the upload in a temporary folder, create
    the repo (``private``) and commit the folder once: (what ``build`` returned, the commit URL,
    the Hub user)."""
    token = hub_token(recipe)
    user = check_write_access(token, repo_id, recipe.hub.token_env)
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="tapir-push-") as tmp:
        folder = Path(tmp) / "upload"
        built = build(folder)
        try:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), commit_message=message(built)
            )
        except Exception as error:
            raise EndpointError(f"hub: upload to {repo_id} failed ({error_line(error)})") from None
    return built, commit.commit_url, user
