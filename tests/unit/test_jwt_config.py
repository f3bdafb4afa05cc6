"""JWT auth's configuration: `general_settings.enable_jwt_auth` and `litellm_jwtauth` checked at
load with errors that name the field, the JWT_* variables in the api settings, and which bearer
values are taken for JWTs."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_proxy.access.jwt_auth import looks_like_jwt
from llm_proxy.config import ConfigError, load_config
from llm_proxy.settings import ApiSettings, SettingsError


def config_file(tmp_path: Path, general: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"model_list: []\ngeneral_settings:\n{general}")
    return path


def test_litellm_jwtauth_defaults_to_the_sub_claim_and_no_team(tmp_path: Path) -> None:
    general = load_config(config_file(tmp_path, "  enable_jwt_auth: true\n")).general_settings
    assert general.enable_jwt_auth is True
    assert general.litellm_jwtauth.user_id_jwt_field == "sub"
    assert general.litellm_jwtauth.team_id_jwt_field is None


@pytest.mark.parametrize(
    ("general", "named"),
    [
        ("  enable_jwt_auth: maybe\n", "general_settings.enable_jwt_auth"),
        (
            "  litellm_jwtauth:\n    admin_jwt_scope: admin\n",
            "general_settings.litellm_jwtauth.admin_jwt_scope",
        ),
        (
            "  litellm_jwtauth:\n    user_id_jwt_field: ''\n",
            "general_settings.litellm_jwtauth.user_id_jwt_field",
        ),
    ],
)
def test_a_bad_jwt_setting_fails_at_load_naming_the_field(
    tmp_path: Path, general: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(config_file(tmp_path, general))


def test_the_jwks_url_must_be_http() -> None:
    settings = ApiSettings.from_env({"JWT_PUBLIC_KEY_URL": "https://idp.example/jwks.json"})
    assert settings.jwt_public_key_url == "https://idp.example/jwks.json"
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY_URL"):
        ApiSettings.from_env({"JWT_PUBLIC_KEY_URL": "file:///etc/passwd"})


@pytest.mark.parametrize(
    ("value", "jwt"),
    [
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", True),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", True),
        ("sk-abc.def.ghi", False),
        ("sk-1234", False),
        ("not a token", False),
        ("a.b", False),
    ],
)
def test_which_bearer_values_are_taken_for_jwts(value: str, jwt: bool) -> None:
    assert looks_like_jwt(value) is jwt
