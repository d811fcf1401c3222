"""Kafka TLS and SASL settings: checked together when read (one line per problem, naming the
variable), turned into aiokafka's keyword arguments by one function that every client the
engine builds uses, and the password never shown. No broker: clients are built, not started
(tests/integration/test_kafka_tls.py runs them over TLS)."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from segengine.errors import ConfigError
from segengine.kafka import kafka_security_kwargs, make_admin, make_consumer, make_producer
from segengine.settings import Settings, settings_problems, unknown_variables

BOOTSTRAP = "kafka-1:9093"
PASSWORD = "hunter2-secret"


def openssl(folder: Path, *args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("these tests make PEM files with the openssl command: install openssl", pytrace=False)
    done = subprocess.run([binary, *args], cwd=folder, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets: a SEGENGINE_* of the shell running the tests would change the outcome."""
    for var in [v for v in os.environ if v.startswith("SEGENGINE_")]:
        monkeypatch.delenv(var)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cert.pem with its key.pem, other.key (not its key) and encrypted.key (its key, with a passphrase)."""
    folder = tmp_path_factory.mktemp("pem")
    ec = ["-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subject = ["-subj", "/CN=segengine test", "-days", "1"]
    openssl(folder, "req", "-x509", "-newkey", "ec", *ec, "-nodes", "-keyout", "key.pem", "-out", "cert.pem", *subject)
    openssl(folder, "genpkey", "-algorithm", "EC", *ec, "-out", "other.key")
    openssl(folder, "pkey", "-in", "key.pem", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key")
    return folder


def problems(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> list[str]:
    """What an operator would read for these variables (the settings are read from the environment)."""
    for var, value in environ.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return settings_problems(caught.value, environ)


def secured(**given: Any) -> Settings:
    return Settings(kafka_bootstrap=BOOTSTRAP, **given)


SASL = {"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "engine", "kafka_sasl_password": PASSWORD}


# -- the settings, checked together --------------------------------------------------------------


def test_the_default_is_plaintext_with_nothing_else() -> None:
    settings = secured()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_security_kwargs(settings) == {"security_protocol": "PLAINTEXT"}


def test_a_sasl_protocol_names_each_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(
        monkeypatch, {"SEGENGINE_KAFKA_BOOTSTRAP": BOOTSTRAP, "SEGENGINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    )
    assert lines == [
        "setting 'kafka_sasl_mechanism': SEGENGINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SEGENGINE_KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
        "setting 'kafka_sasl_username': SEGENGINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SEGENGINE_KAFKA_SASL_USERNAME",
        "setting 'kafka_sasl_password': SEGENGINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SEGENGINE_KAFKA_SASL_PASSWORD",
    ]


def test_an_empty_username_or_password_counts_as_missing() -> None:
    with pytest.raises(ValidationError) as caught:
        secured(
            kafka_security_protocol="SASL_PLAINTEXT", **{**SASL, "kafka_sasl_username": "", "kafka_sasl_password": ""}
        )
    assert [e["loc"] for e in caught.value.errors()] == [("kafka_sasl_username",), ("kafka_sasl_password",)]


def test_sasl_settings_without_a_sasl_protocol_are_refused_and_the_password_is_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = problems(
        monkeypatch,
        {
            "SEGENGINE_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "SEGENGINE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "SEGENGINE_KAFKA_SASL_PASSWORD": PASSWORD,
        },
    )
    assert lines == [
        "SEGENGINE_KAFKA_SASL_PASSWORD=***: SEGENGINE_KAFKA_SASL_PASSWORD is only used with "
        "SEGENGINE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL (it is SSL)"
    ]
    with pytest.raises(ValidationError) as caught:
        secured(kafka_sasl_password=PASSWORD)
    assert PASSWORD not in str(caught.value)  # what a traceback shows


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_without_tls_are_refused(pem: Path, monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    sasl = {f"SEGENGINE_{k.upper()}": v for k, v in SASL.items()} if protocol == "SASL_PLAINTEXT" else {}
    cafile = str(pem / "cert.pem")
    lines = problems(
        monkeypatch,
        {
            "SEGENGINE_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "SEGENGINE_KAFKA_SECURITY_PROTOCOL": protocol,
            "SEGENGINE_KAFKA_SSL_CAFILE": cafile,
            **sasl,
        },
    )
    assert lines == [
        f"SEGENGINE_KAFKA_SSL_CAFILE={cafile!r}: SEGENGINE_KAFKA_SSL_CAFILE is only used with "
        f"SEGENGINE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL (it is {protocol})"
    ]


def test_a_missing_tls_file_is_named_by_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "nope.pem")
    lines = problems(
        monkeypatch,
        {
            "SEGENGINE_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "SEGENGINE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "SEGENGINE_KAFKA_SSL_CAFILE": missing,
            "SEGENGINE_KAFKA_SSL_CERTFILE": str(tmp_path),
        },
    )
    assert lines == [
        f"SEGENGINE_KAFKA_SSL_CAFILE={missing!r}: no file at {missing}",
        f"SEGENGINE_KAFKA_SSL_CERTFILE={str(tmp_path)!r}: {tmp_path} is not a file",
    ]


def test_a_certfile_and_a_keyfile_go_together(pem: Path) -> None:
    for given, problem in (
        ({"kafka_ssl_certfile": pem / "cert.pem"}, "SEGENGINE_KAFKA_SSL_CERTFILE needs SEGENGINE_KAFKA_SSL_KEYFILE"),
        ({"kafka_ssl_keyfile": pem / "key.pem"}, "SEGENGINE_KAFKA_SSL_KEYFILE needs SEGENGINE_KAFKA_SSL_CERTFILE"),
    ):
        with pytest.raises(ValidationError) as caught:
            secured(kafka_security_protocol="SSL", **given)
        (error,) = caught.value.errors()
        assert error["loc"] == ("kafka_ssl_keyfile",) and error["msg"].startswith(problem)


def test_a_secured_protocol_needs_a_configured_broker() -> None:
    """The embedded broker speaks plaintext only: TLS settings with it would fail at the first connection."""
    with pytest.raises(ValidationError) as caught:
        Settings(kafka_security_protocol="SSL")
    assert settings_problems(caught.value, {}) == [
        "setting 'kafka_security_protocol': SSL needs SEGENGINE_KAFKA_BOOTSTRAP (the embedded broker speaks PLAINTEXT only)"
    ]


def test_an_unknown_protocol_or_mechanism_lists_the_allowed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol, mechanism = problems(
        monkeypatch,
        {
            "SEGENGINE_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "SEGENGINE_KAFKA_SECURITY_PROTOCOL": "TLS",
            "SEGENGINE_KAFKA_SASL_MECHANISM": "GSSAPI",
        },
    )
    assert protocol.startswith("SEGENGINE_KAFKA_SECURITY_PROTOCOL='TLS': ") and "'SASL_SSL'" in protocol
    assert mechanism.startswith("SEGENGINE_KAFKA_SASL_MECHANISM='GSSAPI': ") and "'SCRAM-SHA-256'" in mechanism


def test_the_new_variables_are_known() -> None:
    environ = {f"SEGENGINE_{k.upper()}": "x" for k in ("kafka_security_protocol", "kafka_ssl_keyfile", *SASL)}
    assert unknown_variables(environ) == []
    assert unknown_variables({"SEGENGINE_KAFKA_SASL_PASWORD": "x"}) == [
        "unknown setting SEGENGINE_KAFKA_SASL_PASWORD: did you mean SEGENGINE_KAFKA_SASL_PASSWORD?"
    ]


# -- the keyword arguments -------------------------------------------------------------------------


def test_sasl_over_tls_from_the_environment(pem: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {
        "SEGENGINE_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "SEGENGINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SEGENGINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "SEGENGINE_KAFKA_SASL_USERNAME": "engine",
        "SEGENGINE_KAFKA_SASL_PASSWORD": PASSWORD,
        "SEGENGINE_KAFKA_SSL_CAFILE": str(pem / "cert.pem"),
    }.items():
        monkeypatch.setenv(var, value)
    settings = Settings()
    kwargs = kafka_security_kwargs(settings)
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "engine",
        "sasl_plain_password": PASSWORD,  # aiokafka takes a plain string
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "segengine test"),),)]  # the cafile
    assert PASSWORD not in repr(settings)


def test_sasl_without_tls_has_no_ssl_context() -> None:
    kwargs = kafka_security_kwargs(secured(kafka_security_protocol="SASL_PLAINTEXT", **SASL))
    assert kwargs == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "engine",
        "sasl_plain_password": PASSWORD,
    }


def test_the_password_is_masked_wherever_the_arguments_are_printed() -> None:
    kwargs = kafka_security_kwargs(secured(kafka_security_protocol="SASL_PLAINTEXT", **SASL))
    for shown in (repr(kwargs), str(kwargs), f"{kwargs}", "%s" % (kwargs,), "%r" % (kwargs,)):  # noqa: UP031
        assert PASSWORD not in shown and "'sasl_plain_password': '***'" in shown


def test_tls_without_a_cafile_trusts_the_system_cas() -> None:
    context = kafka_security_kwargs(secured(kafka_security_protocol="SSL"))["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_client_certificate_that_does_not_load_is_one_config_error(pem: Path) -> None:
    for keyfile, reason in (("other.key", "KEY_VALUES_MISMATCH"), ("encrypted.key", "the key has a passphrase")):
        settings = secured(
            kafka_security_protocol="SSL", kafka_ssl_certfile=pem / "cert.pem", kafka_ssl_keyfile=pem / keyfile
        )
        with pytest.raises(ConfigError) as caught:  # an encrypted key is refused, not prompted for
            kafka_security_kwargs(settings)
        line = str(caught.value)
        assert "\n" not in line and reason in line
        assert line.startswith(
            f"the Kafka TLS files do not load (SEGENGINE_KAFKA_SSL_CERTFILE={pem / 'cert.pem'}, "
            f"SEGENGINE_KAFKA_SSL_KEYFILE={pem / keyfile}): "
        )


async def test_every_client_factory_passes_the_security_arguments(pem: Path) -> None:
    settings = secured(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=pem / "cert.pem",
        kafka_ssl_certfile=pem / "cert.pem",
        kafka_ssl_keyfile=pem / "key.pem",
        **SASL,
    )
    producer, consumer, admin = make_producer(settings), make_consumer(settings), make_admin(settings)
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert client._bootstrap_servers == BOOTSTRAP
            assert (client._security_protocol, client._sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
            assert (client._sasl_plain_username, client._sasl_plain_password) == ("engine", PASSWORD)
            assert isinstance(client._ssl_context, ssl.SSLContext)
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()
