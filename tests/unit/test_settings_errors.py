"""A mistyped variable or a bad value is named as the operator wrote it: the variable, the
value (never a secret's) and what is allowed, in one line each."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from segengine.settings import Settings, settings_problems, unknown_variables


def test_a_misspelled_variable_is_reported_with_the_closest_known_one() -> None:
    environ = {
        "SEGENGINE_REDIS_ULR": "redis://x",
        "SEGENGINE_KAFKA_BOOTSTRAPS": "k:9092",
        "SEGENGINE_REDIS_URL": "redis://y",
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        "unknown setting SEGENGINE_KAFKA_BOOTSTRAPS: did you mean SEGENGINE_KAFKA_BOOTSTRAP?",
        "unknown setting SEGENGINE_REDIS_ULR: did you mean SEGENGINE_REDIS_URL?",
    ]
    assert unknown_variables({"SEGENGINE_ZZZ_QQQ": "1"}) == ["unknown setting SEGENGINE_ZZZ_QQQ (ignored)"]
    assert unknown_variables({"SEGENGINE_LOG_LEVEL": "DEBUG", "SEGENGINE_BATCH_MAX_RECORDS": "5"}) == []


def test_an_invalid_value_names_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"SEGENGINE_BATCH_MAX_RECORDS": "abc", "SEGENGINE_CLOCK": "sundial"}
    for var, value in environ.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    clock, batch = settings_problems(caught.value, environ)  # in the order the settings are declared
    assert batch.startswith("SEGENGINE_BATCH_MAX_RECORDS='abc': ") and "integer" in batch
    assert clock.startswith("SEGENGINE_CLOCK='sundial': ") and "'wall'" in clock and "'event'" in clock


def test_a_secrets_value_is_never_shown() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(api_token=["not", "a", "string"])  # type: ignore[arg-type]
    assert settings_problems(caught.value, {"SEGENGINE_API_TOKEN": "hunter2"}) == [
        f"SEGENGINE_API_TOKEN=***: {caught.value.errors()[0]['msg']}"
    ]
