"""Settings from the environment: production refuses unsafe ones, development needs none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import config as settings
from backoffice import create_app
from config import INSECURE_DEV_SECRET, get_config, normalise_database_url

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k" * 16 + "-random-enough-for-a-test-" + "z" * 8
PG_URL = "postgresql://backoffice@db.example.com:5432/backoffice"


@pytest.fixture
def production_env(monkeypatch):  # noqa: ANN001, ANN201
    """A production environment that passes every check; each test breaks one thing."""
    monkeypatch.setenv("SECRET_KEY", STRONG_KEY)
    monkeypatch.setenv("DATABASE_URL", PG_URL)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    return monkeypatch


def test_production_starts_with_a_real_secret_key_and_a_database_url(production_env):
    app = create_app("production")
    assert app.config["ENV_NAME"] == "production"
    assert app.config["SECRET_KEY"] == STRONG_KEY
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_production_refuses_a_missing_secret_key(production_env):
    production_env.delenv("SECRET_KEY")
    with pytest.raises(RuntimeError) as info:
        create_app("production")
    assert str(info.value) == (
        "Refusing to start: SECRET_KEY must be set to a random value of at least 32 characters"
    )


@pytest.mark.parametrize(
    "weak", ["", "short", "x" * 31, INSECURE_DEV_SECRET], ids=["empty", "short", "31", "dev"]
)
def test_production_refuses_a_weak_secret_key(production_env, weak):
    production_env.setenv("SECRET_KEY", weak)
    with pytest.raises(RuntimeError, match="SECRET_KEY must be set to a random value"):
        create_app("production")


def test_production_refuses_a_missing_database_url(production_env):
    production_env.delenv("DATABASE_URL")
    with pytest.raises(RuntimeError) as info:
        create_app("production")
    assert str(info.value) == "Refusing to start: DATABASE_URL must be set"


def test_production_lists_every_problem_at_once(production_env):
    production_env.delenv("SECRET_KEY")
    production_env.setenv("DATABASE_URL", "")
    production_env.setenv("FLASK_DEBUG", "1")
    with pytest.raises(RuntimeError) as info:
        create_app("production")
    message = str(info.value)
    assert "SECRET_KEY must be set" in message
    assert "DATABASE_URL must be set" in message
    assert "FLASK_DEBUG must be off in production" in message


def test_development_and_testing_do_not_insist(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert create_app("development").config["ENV_NAME"] == "development"
    assert create_app("testing").config["TESTING"] is True


def _app_config_in_a_fresh_process(env: dict[str, str], name: str) -> dict[str, object]:
    """Config classes read the environment at import: look at them from a new interpreter."""
    code = (
        "import json; from backoffice import create_app; "
        f"app = create_app({name!r}); "
        "print(json.dumps({'uri': app.config['SQLALCHEMY_DATABASE_URI'], "
        "'instance': app.instance_path, 'env': app.config['ENV_NAME'], "
        "'secure_cookie': app.config['SESSION_COOKIE_SECURE']}))"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SECRET_KEY", "BACKOFFICE_ENV", "FLASK_DEBUG"}
    }
    result = subprocess.run(  # noqa: S603 - fixed interpreter and code
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_development_defaults_to_a_sqlite_file_in_the_instance_folder():
    config = _app_config_in_a_fresh_process({}, "development")
    instance = Path(str(config["instance"]))
    assert config["env"] == "development"
    assert config["uri"] == f"sqlite:///{instance / 'backoffice.sqlite'}"
    assert instance == ROOT / "instance"
    assert instance.is_dir()


def test_development_is_the_default_environment():
    assert _app_config_in_a_fresh_process({}, None)["env"] == "development"  # type: ignore[arg-type]


def test_production_uses_database_url_and_secure_cookies():
    config = _app_config_in_a_fresh_process(
        {"SECRET_KEY": STRONG_KEY, "DATABASE_URL": "postgres://u@db:5432/bo"}, "production"
    )
    assert config["env"] == "production"
    assert config["uri"] == "postgresql+psycopg2://u@db:5432/bo"
    assert config["secure_cookie"] is True


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+psycopg2://u:p@h:5432/d"),
        ("postgresql://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
        (None, None),
    ],
)
def test_database_urls_from_hosting_platforms_are_accepted(given, used):
    assert normalise_database_url(given) == used


def test_unknown_environment_name_is_refused(monkeypatch):
    monkeypatch.setenv("BACKOFFICE_ENV", "staging")
    with pytest.raises(RuntimeError, match="Unknown BACKOFFICE_ENV 'staging'"):
        get_config()
    assert get_config("testing") is settings.TestingConfig


def test_the_compose_file_passes_the_trusted_proxy_count_to_the_app():
    """The login limits key on the client's address: behind the TLS proxy the compose file
    expects, the app must be told how many proxies to believe."""
    compose = (Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text()
    web = compose.split("\n  web:\n", 1)[1].split("\n  worker:\n", 1)[0]
    assert "      TRUSTED_PROXY_COUNT: ${TRUSTED_PROXY_COUNT:-0}\n" in web


def test_the_trusted_proxy_count_decides_which_address_the_login_limit_sees(monkeypatch):
    monkeypatch.setenv("TRUSTED_PROXY_COUNT", "1")
    app = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    seen = {}

    @app.get("/whoami-test")
    def whoami():  # noqa: ANN202
        from flask import request

        seen["addr"] = request.remote_addr
        return "ok"

    headers = {"X-Forwarded-For": "203.0.113.9"}
    app.test_client().get("/whoami-test", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert seen["addr"] == "203.0.113.9"
