"""docker-compose.yml, deploy/Dockerfile and .dockerignore, read as files (no Docker engine):
the workers' healthcheck asks for readiness, Kafka and Redis keep their data in named volumes,
Redis is private and requires a password the workers carry, the stack has no default secrets,
the demo producer runs only in the `demo` profile, every SEGENGINE_* variable is a real
setting, the build context holds only what the image is built from, and the image runs the
installed wheel as a non-root user."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.connection import parse_url

from segengine.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# what `.env` would hold: the secrets the stack refuses to start without
SECRETS = {
    "REDIS_PASSWORD": "redis-pw-0123abcd",
    "SEGENGINE_API_TOKEN": "api-token-4567ef",
    "GRAFANA_ADMIN_PASSWORD": "grafana-pw-89ab",
}


# --- Compose interpolation (the subset of the Compose Specification the file may use) -------


class MissingVariable(LookupError):
    """A `${VAR:?message}` (or `${VAR?message}`) whose variable is not set: compose stops."""


_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}`` and ``$$`` resolved in every string, as
    compose does after reading the YAML (keys are left alone)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        dollar, name, op, arg, bare = m.groups()
        if dollar:
            return "$"
        if bare:
            return env.get(bare, "")
        current = env.get(name)
        missing = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if missing else str(current)
        if op in ("?", ":?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        if op in ("+", ":+"):
            return "" if missing else arg
        return current or ""

    return _VARIABLE.sub(one, value)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the `<<: *engine` merge keys


def compose(env: Mapping[str, str] = SECRETS) -> dict[str, Any]:
    """The file as compose sees it with ``env`` as the environment (and no `.env` file)."""
    return interpolate(raw_compose(), env)


def engine_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from deploy/Dockerfile: the workers, the topic creation, the demo producer."""
    return {
        name: svc
        for name, svc in doc["services"].items()
        if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == "deploy/Dockerfile"
    }


def workers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in engine_services(doc).items() if svc.get("command") == ["run"]}


def test_the_interpolation_helper_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("a${SET}b$SET$$SET", env) == "axbx$SET"
    assert interpolate(["${EMPTY:-d}", "${EMPTY-d}", "${UNSET-d}", "${SET:+alt}", "${EMPTY:+alt}"], env) == [
        "d",
        "",
        "d",
        "alt",
        "",
    ]
    assert interpolate({"k": "${SET:?needed}"}, env) == {"k": "x"}
    for required in ("${EMPTY:?needed}", "${UNSET?needed}"):
        with pytest.raises(MissingVariable, match="needed"):
            interpolate(required, env)


# --- the workers -----------------------------------------------------------------------------


def test_the_worker_healthcheck_asks_for_readiness_on_the_api_port() -> None:
    found = workers(compose())
    assert len(found) == 2
    for name, svc in found.items():
        check = " ".join(svc["healthcheck"]["test"])
        url = re.search(r"http://[^/'\"]+:(\d+)(/\w+)", check)
        assert url is not None, f"{name}: no URL in its healthcheck: {check}"
        assert url.group(2) == "/readyz", f"{name}: the healthcheck asks {url.group(2)}, not /readyz"
        assert url.group(1) == svc["environment"]["SEGENGINE_HTTP_PORT"], f"{name}: not the HTTP API's port"


def segengine_variables(text: str) -> set[str]:
    return set(re.findall(r"\b(SEGENGINE_[A-Z0-9_]+)", text))


def unknown_settings(names: set[str]) -> set[str]:
    known = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    return names - known


def test_every_segengine_variable_is_a_real_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt variable would be ignored by the worker (only warned about): every
    SEGENGINE_* name in the compose file (environment keys and interpolations) and the
    Dockerfile names a field of Settings, and the values the workers get are accepted."""
    names = segengine_variables(COMPOSE.read_text()) | segengine_variables(DOCKERFILE.read_text())
    assert {"SEGENGINE_KAFKA_BOOTSTRAP", "SEGENGINE_REDIS_URL", "SEGENGINE_API_TOKEN"} <= names
    assert unknown_settings(names) == set()
    assert unknown_settings({"SEGENGINE_REDIS_ULR", "SEGENGINE_HTTP_PORT"}) == {"SEGENGINE_REDIS_ULR"}  # can fail

    services = engine_services(compose())
    assert {"topics", "worker-1", "worker-2", "producer"} <= set(services)
    for svc in services.values():
        env = {k: str(v) for k, v in svc["environment"].items()}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.kafka_bootstrap == "kafka:9092"
        assert (
            settings.api_token is not None and settings.api_token.get_secret_value() == SECRETS["SEGENGINE_API_TOKEN"]
        )
        assert settings.http_port == 9108 and settings.log_format == "json" and settings.log_level == "INFO"
        for key in env:
            monkeypatch.delenv(key)


def test_settings_come_from_the_environment_with_defaults() -> None:
    doc = compose({**SECRETS, "SEGENGINE_LOG_LEVEL": "DEBUG"})
    assert {svc["environment"]["SEGENGINE_LOG_LEVEL"] for svc in workers(doc).values()} == {"DEBUG"}
    assert {svc["environment"]["SEGENGINE_LOG_LEVEL"] for svc in workers(compose()).values()} == {"INFO"}


def test_the_stack_has_no_default_secrets() -> None:
    """Without the secrets compose refuses to start (there is no well-known password left
    unchanged); with them set, each reaches the service it is for."""
    for secret in SECRETS:
        with pytest.raises(MissingVariable, match=secret):
            compose({k: v for k, v in SECRETS.items() if k != secret})
        with pytest.raises(MissingVariable, match=secret):  # an empty value is not a secret either
            compose({**SECRETS, secret: ""})
    grafana = compose()["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]


# --- Redis and Kafka -------------------------------------------------------------------------


def test_redis_is_not_published_and_requires_the_password_the_workers_carry() -> None:
    doc = compose()
    redis = doc["services"]["redis"]
    assert "ports" not in redis and redis.get("network_mode") != "host", "Redis is published on the host"
    command = redis["command"]
    assert command[0] == "redis-server"  # the image's entrypoint drops root only for redis-server
    assert command[command.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["environment"]["REDISCLI_AUTH"] == SECRETS["REDIS_PASSWORD"]  # the healthcheck's redis-cli
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])

    engine = {n: s for n, s in doc["services"].items() if "SEGENGINE_REDIS_URL" in s.get("environment", {})}
    assert set(workers(doc)) <= set(engine)
    for name, svc in engine.items():
        url = parse_url(svc["environment"]["SEGENGINE_REDIS_URL"])  # as the worker's client reads it
        assert (url["host"], url["port"], url.get("password")) == ("redis", 6379, SECRETS["REDIS_PASSWORD"]), name


def test_host_ports_listen_on_loopback_unless_asked() -> None:
    published = {name: svc["ports"] for name, svc in compose()["services"].items() if "ports" in svc}
    assert {"kafka", "worker-1", "worker-2", "prometheus", "grafana"} <= set(published)
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} listens beyond this host"
    opened = compose({**SECRETS, "PUBLISH_ADDRESS": "0.0.0.0"})["services"]["grafana"]["ports"]
    assert opened == ["0.0.0.0:3000:3000"]


def test_kafka_keeps_its_log_in_a_named_volume() -> None:
    doc = compose()
    kafka = doc["services"]["kafka"]
    mounts = dict(v.split(":")[:2] for v in kafka["volumes"])
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert log_dirs in mounts.values(), f"Kafka writes to {log_dirs}, which no volume holds"
    volume = next(source for source, target in mounts.items() if target == log_dirs)
    assert volume in (doc.get("volumes") or {}), f"{volume} is not a named volume"
    assert not log_dirs.startswith("/tmp")


# --- profiles --------------------------------------------------------------------------------


def test_the_demo_producer_runs_only_in_the_demo_profile() -> None:
    services = compose()["services"]
    demo = {name for name, svc in services.items() if svc.get("command") == ["demo-produce"]}
    assert demo == {"producer"}
    assert services["producer"]["profiles"] == ["demo"]
    # `docker compose up` without a profile: every other service, none of them gated
    assert [name for name, svc in services.items() if name not in demo and "profiles" in svc] == []
    for name, svc in services.items():  # nothing the production stack starts waits for the demo
        assert not set(svc.get("depends_on") or ()) & demo, name


# --- .dockerignore ---------------------------------------------------------------------------


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, regex) per line, as the builder reads them: `*` and `?` stay within one
    path segment, `**` spans segments, `!` lets back in what an earlier line left out."""
    rules = []
    for line in text.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        excludes = not pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
                continue
            if pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
                continue
            if ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "[":
                end = pattern.index("]", i + 1)
                body = pattern[i + 1 : end]
                regex += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = end
            else:
                regex += re.escape(ch)
            i += 1
        rules.append((excludes, re.compile(f"^{regex}$")))
    return rules


def left_out(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context lacks ``path``: the last line matching it or a folder above it decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    decision = False
    for excludes, regex in rules:
        if any(regex.match(p) for p in prefixes):
            decision = excludes
    return decision


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    out, pending = [], ""
    for line in dockerfile.splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def copied_from_context() -> list[str]:
    """The context paths the Dockerfile's COPY/ADD instructions read (not those from a stage)."""
    sources = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword in ("COPY", "ADD"):
            words = args.split()
            if any(w.startswith("--from") for w in words):
                continue
            sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def context_files(source: str) -> Iterator[str]:
    path = ROOT / source
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        relative = file.relative_to(ROOT).as_posix()
        if "__pycache__" not in relative.split("/"):
            yield relative


def test_the_dockerignore_helper_reads_patterns_as_the_builder_does() -> None:
    rules = dockerignore_rules("*\n!engine\n**/__pycache__\nbuild/\n*.egg-info\n")
    assert left_out("a/b/c", rules) and left_out("x.egg-info/PKG-INFO", rules)
    assert not left_out("engine/settings.py", rules)
    assert left_out("engine/__pycache__/settings.cpython-311.pyc", rules)
    assert not left_out("engine/x", dockerignore_rules("build/\n*.egg-info\n"))
    assert left_out("build/lib/x.py", dockerignore_rules("build/\n"))
    assert not left_out("engine/x.egg-info/y", dockerignore_rules("*.egg-info\n"))  # `*` stays in one segment


def test_the_build_context_is_what_the_image_is_built_from() -> None:
    assert DOCKERIGNORE.exists(), "no .dockerignore: the whole folder, .venv included, goes to the builder"
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for path in (
        ".venv/lib/python3.11/site-packages/redis/__init__.py",
        ".venv/bin/python",
        ".git/HEAD",
        ".git/objects/pack/pack-0.pack",
        ".pytest_cache/v/cache/nodeids",
        ".hypothesis/examples/0a/1b",
        ".mypy_cache/3.11/segengine/settings.data.json",
        ".ruff_cache/0.17.5/123",
        "build/lib/segengine/__init__.py",
        "dist/segengine-0.1.0-py3-none-any.whl",
        "segengine.egg-info/PKG-INFO",
        "engine/__pycache__/settings.cpython-311.pyc",
        ".env",
        "tests/unit/test_state.py",
        "bench-results.json",
    ):
        assert left_out(path, rules), f"{path} goes into the build context"

    sources = copied_from_context()
    assert {"pyproject.toml", "engine", "rules", "topics"} <= set(sources)
    for source in sources:
        files = list(context_files(source))
        assert files, f"the Dockerfile copies {source}, which does not exist"
        kept_out = [f for f in files if left_out(f, rules)]
        assert kept_out == [], f"the Dockerfile copies {source}, but .dockerignore leaves out {kept_out[:5]}"


# --- the Dockerfile --------------------------------------------------------------------------


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def final_stage() -> list[tuple[str, str]]:
    found = stages()
    assert len(found) >= 2, "one stage: the image would carry the build tools and the source"
    return found[-1]


def test_the_image_runs_the_installed_wheel_as_a_non_root_user() -> None:
    stage = final_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the final stage sets no USER: the worker runs as root"
    user = users[-1].split(":")[0]
    # numeric, so that Kubernetes' runAsNonRoot can check it without the image's /etc/passwd
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}"
    last = {keyword: i for i, (keyword, _) in enumerate(stage)}
    assert last["USER"] > last.get("RUN", -1), "a RUN after the last USER runs as root"

    runs = " && ".join(args for keyword, args in stage if keyword == "RUN")
    assert not re.search(r"pip\s+install\b[^&;|]*\s(-e|--editable)\b", runs), "an editable install"
    assert re.search(r"pip\s+install\b[^&;|]*\.whl", runs), "the final stage does not install a wheel"
    assert any(k == "COPY" and "--from=" in a for k, a in stage), "the wheel does not come from the build stage"
    assert not [a for k, a in stage if k in ("COPY", "ADD") and "--from=" not in a], "source copied into the image"


def test_the_image_runs_the_compiled_core_and_refuses_to_build_without_it() -> None:
    """A stage compiles the core against the installed wheel; the final stage copies the build
    into its own installed package (no compiler there) and checks that a new process uses it."""
    named = {
        args.split()[-1]: stage for stage in stages()[:-1] for keyword, args in stage[:1] if " AS " in args.upper()
    }
    builders = [
        name for name, stage in named.items() if any(k == "RUN" and "segengine native build" in a for k, a in stage)
    ]
    assert len(builders) == 1, "no stage runs `segengine native build`"
    builder = named[builders[0]]
    assert any(k == "RUN" and re.search(r"pip\s+install\b.*\[native\]", a) and ".whl" in a for k, a in builder), (
        "the core is not compiled against the wheel the image installs"
    )
    stage = final_stage()
    copies = [
        i for i, (k, a) in enumerate(stage)
        if k == "COPY" and f"--from={builders[0]}" in a and a.split()[-1].endswith("site-packages/segengine/_native")
    ]  # fmt: skip
    assert copies, "the final stage does not take the compiled modules into its installed package"
    checks = [i for i, (k, a) in enumerate(stage) if k == "RUN" and "segengine native status" in a and "compiled" in a]
    assert checks and checks[-1] > copies[-1], "nothing checks that the image's worker runs the compiled core"
    assert not any(k == "RUN" and re.search(r"\b(gcc|mypy)\b", a) for k, a in stage), "build tools in the image"
