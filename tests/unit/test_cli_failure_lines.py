"""What a command prints when it fails: one line that says what and why, never a password or
customer data."""

from __future__ import annotations

from redis.exceptions import AuthenticationError, NoPermissionError

from segengine.commands.common import failure_line, redacted
from segengine.errors import RedisLost
from segengine.evaluate import FoldError


def test_redis_refusing_the_login_or_a_command_is_said_as_such() -> None:
    assert failure_line(AuthenticationError("invalid username-password pair or user is disabled.")).startswith(
        "Redis refused the login: invalid username-password pair"
    )
    assert failure_line(NoPermissionError("this user has no permissions to run the 'flushall' command")).startswith(
        "Redis refused a command to the engine's user (its ACL)"
    )


def test_segengine_s_own_errors_carry_their_message_but_processing_errors_do_not() -> None:
    assert failure_line(RedisLost("Redis lost its data; run `segengine rebuild`")) == (
        "RedisLost: Redis lost its data; run `segengine rebuild`"
    )
    assert "customer-42" not in failure_line(FoldError(0, ValueError("customer-42 is odd")))


def test_a_printed_url_never_shows_its_password() -> None:
    assert redacted("redis://segengine:s3cr%40t@cache:6380/0") == "redis://segengine:***@cache:6380/0"
    assert redacted("rediss://:pw@cache/0?ssl_ca_certs=ca.pem") == "rediss://:***@cache/0?ssl_ca_certs=ca.pem"
    assert redacted("redis://127.0.0.1:6400/0") == "redis://127.0.0.1:6400/0"
