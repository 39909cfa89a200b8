"""No password survives in any message: URIs are redacted by position, whatever the
password holds, and every secret the settings know is scrubbed from logs and errors."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlcycle.cli import app
from mlcycle.config import Settings, get_settings, redact_text, redact_uri, uri_secrets
from mlcycle.logging_setup import configure_logging

SCHEMES = ["mongodb", "mongodb+srv", "http", "https", "sasl_ssl"]
# anything a person might type into a password, unescaped: / @ : ? # % and spaces too
PASSWORD = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24
)
USER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", max_size=10)
HOST = st.sampled_from(
    ["127.0.0.1:27017", "db.internal", "a:1,b:2", "[::1]:8080", "mongo-0.mongo.svc"]
)
TAIL = st.sampled_from(["", "/", "/mlcycle", "/db?authSource=admin", "/x?tls=true#frag"])


@given(scheme=st.sampled_from(SCHEMES), user=USER, password=PASSWORD, host=HOST, tail=TAIL)
@settings(max_examples=400, deadline=None)
def test_no_password_survives_redaction(
    scheme: str, user: str, password: str, host: str, tail: str
) -> None:
    uri = f"{scheme}://{user}:{password}@{host}{tail}"
    shown = redact_uri(uri)
    assert shown.endswith(f"@{host}{tail}")
    # the password is gone: whatever remains before the host is the user and ***
    assert shown[: -len(f"@{host}{tail}")] in (f"{scheme}://{user}:***", f"{scheme}://***")
    assert password in uri_secrets(uri)
    # inside a longer message, and with the settings' secrets scrubbed as well
    text = redact_text(f"cannot reach {uri}: timed out ({uri!r})", (password,))
    assert password not in text.replace("***", "")


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://user:se/cr@t@host:27017/db", "mongodb://user:***@host:27017/db"),
        ("mongodb://:pw@host", "mongodb://***@host"),
        ("http://u:p@h/x?y=1", "http://u:***@h/x?y=1"),
        ("http://token@h", "http://***@h"),
        ("mongodb://host/db", "mongodb://host/db"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redacted_forms(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_settings_know_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGO_URI", "mongodb://app:p%40ss/w@127.0.0.1/db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ml:tracking-secret@127.0.0.1:5000")
    monkeypatch.setenv("MLCYCLE_KAFKA_SASL_PASSWORD", "kafka-secret")
    found = Settings().secrets()
    for secret in ("p%40ss/w", "p@ss/w", "tracking-secret", "kafka-secret"):
        assert secret in found


def test_logs_never_carry_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text", ("hunter2-secret",))
    try:
        logging.getLogger("mlcycle.test").warning(
            "connecting to %s with %s", "mongodb://u:x/y@z@h/db", "hunter2-secret"
        )
        try:
            raise RuntimeError("boom at mongodb://:hunter2-secret@h")
        except RuntimeError:
            logging.getLogger("mlcycle.test").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "connecting to mongodb://u:***@h/db with ***" in err
    assert "hunter2" not in err and "x/y@z" not in err


@pytest.mark.parametrize(
    "password", ["pa/ss@word", "p@:/?#x", "plain-secret-9", "sp ace d", "ünï/cødé@"]
)
def test_doctor_and_etl_print_no_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, password: str
) -> None:
    """The commands that print the store's URI, pointed at a server that is not there."""
    monkeypatch.setenv("MONGO_URI", f"mongodb://:{password}@127.0.0.1:9/db?authSource=admin")
    monkeypatch.setenv("MLCYCLE_STORE_TIMEOUT_MS", "50")
    monkeypatch.setenv("MLCYCLE_STORE_RETRIES", "1")
    get_settings.cache_clear()
    runner = CliRunner()
    for args in (["doctor"], ["etl", "--json"], ["etl"]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        assert password not in result.output, (args, result.output)
        for part in password.split():
            assert len(part) < 3 or part not in result.output, (args, result.output)


def test_tracking_uri_credentials_are_taken_out_and_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(var, "")  # restored after the test, whatever Settings sets
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:s%2Fe@cr/et@127.0.0.1:5000/mlflow")
    found = Settings()
    assert found.tracking_uri == "http://127.0.0.1:5000/mlflow"
    import os

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "bob"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s/e@cr/et"
    assert "s%2Fe@cr/et" in found.secrets()


def test_tracking_credentials_in_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "from-env")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://bob:pw@mlflow.example:443")
    assert Settings().tracking_uri == "https://mlflow.example:443"
    import os

    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (
        "alice",
        "from-env",
    )
