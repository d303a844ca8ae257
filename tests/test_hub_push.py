"""``tapir push`` up to the network boundary: the token checks a user meets before anything is
built, against huggingface_hub's real whoami call served by a local stand-in for the Hub
(tests/hub_standin.py; the upload itself is checked in test_pipeline_scripted)."""

import re

import pytest
import yaml

from tapir.errors import EndpointError
from tapir.publishing.hub_push import check_write_access

from .conftest import tiny_recipe_dict
from .test_cli import assert_one_line_error, tapir

TOKEN = "hf_" + "LocalStandInToken" * 2


def identity(role, orgs=(), scoped=()):
    token = {"role": role}
    if role == "fineGrained":
        token["fineGrained"] = {"scoped": list(scoped), "global": []}
    return {
        "name": "alice",
        "orgs": [{"name": n, "roleInOrg": r} for n, r in orgs],
        "auth": {"accessToken": token},
    }


def test_write_tokens_pass_for_namespaces_they_can_write(hub):
    hub.identity, hub.status = identity("write", orgs=[("lab", "write")]), 200
    assert check_write_access(TOKEN, "alice/tapir-data", "HF_TOKEN") == "alice"
    assert hub.tokens == {TOKEN}  # the Hub was asked with the user's token
    assert check_write_access(TOKEN, "lab/tapir-data", "HF_TOKEN") == "alice"
    hub.identity = identity(
        "fineGrained", scoped=[{"entity": {"type": "org", "name": "lab"}, "permissions": ["repo.write"]}]
    )
    hub.identity["orgs"] = [{"name": "lab", "roleInOrg": "contributor"}]
    assert check_write_access(TOKEN, "lab/tapir-data", "HF_TOKEN") == "alice"


@pytest.mark.parametrize(
    ("who", "repo", "message"),
    [
        (identity("read"), "alice/x", "HF_TOKEN is a read-only token"),
        (identity("write"), "lab/x", "'alice' cannot write to 'lab' (not a member"),
        (identity("write", orgs=[("lab", "read")]), "lab/x", "read-only access to the org 'lab'"),
        (
            identity(
                "fineGrained", scoped=[{"entity": {"name": "alice"}, "permissions": ["repo.content.read"]}]
            ),
            "alice/x",
            "no repo.write permission on 'alice'",
        ),
    ],
)
def test_tokens_that_cannot_write_are_refused(hub, who, repo, message):
    hub.identity, hub.status = who, 200
    with pytest.raises(EndpointError, match=re.escape(message)) as error:
        check_write_access(TOKEN, repo, "HF_TOKEN")
    assert TOKEN not in str(error.value)


def test_a_rejected_token_is_named(hub):
    hub.status = 401
    with pytest.raises(EndpointError, match=r"\$HF_TOKEN was rejected by the Hub"):
        check_write_access(TOKEN, "alice/x", "HF_TOKEN")


def test_push_without_a_token_fails_before_building_anything(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path)))
    result = tapir(
        "push", "--recipe", str(path), "--repo-id", "alice/tapir-data",
        env_extra={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home")},
    )  # fmt: skip
    assert_one_line_error(result, "hub.token_env: $HF_TOKEN is not set")
    assert not (tmp_path / "out-hub").exists()
    # Without --repo-id (and no hub.repo_id) the error names that instead.
    result = tapir("push", "--recipe", str(path), env_extra={"HF_TOKEN": TOKEN})
    assert_one_line_error(result, "hub.repo_id: not set")


def test_dry_run_never_replaces_a_folder_that_is_not_an_upload(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tmp_path)))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = tapir("push", "--recipe", str(path), "--dry-run", "--to", str(precious))
    assert_one_line_error(result, "is not a tapir push folder")
    assert (precious / "notes.txt").read_text() == "keep me"
