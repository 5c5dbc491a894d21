"""The option validators (asyncmail.options.check_*): one per kind of value,
shared by the EMAIL_* settings and the backends' options. Every bad value
is a ConfigurationError naming the option and the value (a text option's
type only: it may be a secret)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import asyncmail
from asyncmail.exceptions import ConfigurationError
from asyncmail.options import (
    check_bool,
    check_count,
    check_port,
    check_seconds,
    check_str,
    check_timeout,
    check_tls_mode,
)

Check = Callable[[str, Any], Any]


def _count_from_1(name: str, value: Any) -> Any:
    return check_count(name, value, minimum=1)


def _optional_count_from_1(name: str, value: Any) -> Any:
    return check_count(name, value, minimum=1, optional=True)


def _seconds_required(name: str, value: Any) -> Any:
    return check_seconds(name, value, optional=False)


BAD: list[tuple[Check, Any]] = [
    (check_bool, 1),
    (check_bool, "yes"),
    (check_bool, None),
    (check_port, 0),
    (check_port, 65536),
    (check_port, True),
    (check_port, "25"),
    (check_port, 25.0),
    (check_timeout, 0),
    (check_timeout, -1),
    (check_timeout, math.nan),
    (check_timeout, "10"),
    (check_timeout, False),
    (check_seconds, -0.5),
    (check_seconds, "1"),
    (check_seconds, math.nan),
    (_seconds_required, None),
    (check_count, -1),
    (check_count, 1.5),
    (check_count, True),
    (check_count, None),
    (_count_from_1, 0),
    (_optional_count_from_1, 0),
]


@pytest.mark.parametrize(("check", "value"), BAD)
def test_a_bad_value_is_refused_naming_the_option_and_the_value(
    check: Check, value: Any
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check("the_option", value)
    message = str(caught.value)
    assert message.startswith("the_option must be "), message
    assert message.endswith(f"not {value!r}"), message


def test_a_text_option_names_the_type_not_the_value() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_str("password", b"s3cret")
    assert str(caught.value) == "password must be a str, not bytes"
    assert "s3cret" not in str(caught.value)


GOOD: list[tuple[Check, Any, Any]] = [
    (check_str, "x", "x"),
    (check_bool, False, False),
    (check_port, 1, 1),
    (check_port, 65535, 65535),
    (check_timeout, None, None),
    (check_timeout, 2, 2.0),
    (check_timeout, 0.25, 0.25),
    (check_seconds, 0, 0.0),
    (check_seconds, None, None),
    (check_count, 0, 0),
    (_count_from_1, 3, 3),
    (_optional_count_from_1, None, None),
]


@pytest.mark.parametrize(("check", "value", "normalised"), GOOD)
def test_a_good_value_comes_back_normalised(
    check: Check, value: Any, normalised: Any
) -> None:
    result = check("the_option", value)
    assert result == normalised
    assert type(result) is type(normalised)


def test_tls_modes_exclude_each_other_by_the_users_names() -> None:
    check_tls_mode(True, False)
    check_tls_mode(False, True)
    check_tls_mode(False, False)
    with pytest.raises(
        ConfigurationError, match=r"^use_tls \(STARTTLS\) and use_ssl .*exclusive"
    ):
        check_tls_mode(True, True)
    with pytest.raises(ConfigurationError, match=r"^EMAIL_USE_TLS .* EMAIL_USE_SSL"):
        asyncmail.configure(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EMAIL_PORT", 0, "EMAIL_PORT must be an int from 1 to 65535, not 0"),
        ("EMAIL_USE_TLS", 1, "EMAIL_USE_TLS must be True or False, not 1"),
        (
            "EMAIL_TIMEOUT",
            -2,
            "EMAIL_TIMEOUT must be a positive number of seconds or None, not -2",
        ),
        ("EMAIL_HOST", 5, "EMAIL_HOST must be a str, not int"),
    ],
)
def test_settings_use_the_same_validators(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        asyncmail.configure(**{name: value})
    assert str(caught.value) == message
