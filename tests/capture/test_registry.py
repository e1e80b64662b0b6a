"""The registry file: validation messages name file, service and key; names resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import AccessDeniedError, ConfigError, UnknownServiceError
from bot.registry import load_registry

GOOD = """
services:
  payments:
    targets: ["http://10.0.0.5:6060", "dns+http://payments-headless.prod.svc:6060"]
    channel: C0123456
    aliases: [pay]
    auth_header_env: PAYMENTS_PPROF_AUTH
    headers_env: {X-Token: PAYMENTS_TOKEN}
    gc: true
    allow_channels: [C0123456]
    allow_usergroups: [S999]
  checkout:
    targets: ["https://checkout.internal:8443/"]
    timeout_seconds: 3
defaults: {timeout_seconds: 7, cooldown_seconds: 12, retention_count: 50, retention_days: 3}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "heapbot.yaml"
    path.write_text(text)
    return path


def test_good_file_applies_defaults_and_overrides(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, GOOD))
    payments = registry.resolve("payments")
    checkout = registry.resolve("checkout")
    assert payments.timeout_seconds == 7 and checkout.timeout_seconds == 3
    assert payments.cooldown_seconds == 12 and payments.retention_count == 50
    assert payments.gc is True and checkout.gc is False
    assert checkout.targets == ("https://checkout.internal:8443",)
    assert registry.names() == ["checkout", "payments"]


@pytest.mark.parametrize("name", ["pay", "PAY", "Payments", " payments "])
def test_resolve_accepts_aliases_in_any_case(tmp_path: Path, name: str) -> None:
    assert load_registry(write(tmp_path, GOOD)).resolve(name).name == "payments"


def test_unknown_service_suggests_close_names(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, GOOD))
    with pytest.raises(UnknownServiceError) as err:
        registry.resolve("paymnts")
    assert err.value.suggestions == ["payments"]
    assert "Did you mean `payments`?" in err.value.user_message()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('services:\n  payments:\n    targets: ["http://10.0.0.5:6060", "htp://x"]\n',
         "heapbot.yaml: services.payments.targets[1]: 'htp://x' is not an http(s) URL"),
        ("services:\n  payments:\n    targets: [\"http://a:1\"]\n    tiemout_seconds: 3\n",
         "heapbot.yaml: services.payments.tiemout_seconds: unknown key"),
        ("services:\n  payments:\n    channel: C1\n",
         "heapbot.yaml: services.payments.targets: is required"),
        ("services:\n  payments:\n    targets: [\"http://a:1\"]\n    timeout_seconds: soon\n",
         "heapbot.yaml: services.payments.timeout_seconds: Input should be a valid number"),
        ("services:\n  payments:\n    targets: [\"dns+http://svc\"]\n",
         "services.payments.targets[0]: 'dns+http://svc' needs an explicit port"),
        ("services:\n  a:\n    targets: [\"http://a:1\"]\n    aliases: [b]\n"
         "  b:\n    targets: [\"http://b:1\"]\n",
         "heapbot.yaml: services.b: the name 'b' is already used by service `a`"),
        ("services: [1, 2]\n", "heapbot.yaml: services: Input should be a valid dictionary"),
        ("services:\n  payments: {targets: [\"http://a:1\"\n",
         "heapbot.yaml: not valid YAML at line"),
    ],
)
def test_invalid_files_name_file_service_and_key(tmp_path: Path, text: str,
                                                 expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, text))
    assert expected in err.value.user_message()


def test_a_misspelt_key_names_the_file_it_is_in_and_the_key_meant(tmp_path: Path) -> None:
    path = write(tmp_path, 'services:\n  p:\n    target: ["http://a:1"]\n')
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    shown = err.value.user_message()
    # the whole path (HEAPBOT_CONFIG may point anywhere), and the cause before its effect
    assert shown.startswith(f"{path}: services.p.target: unknown key 'target'; did you mean "
                            "'targets'?"), shown
    assert "services.p.targets: is required" in shown
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, 'services:\n  p: {targets: ["http://a:1"\n'))
    assert err.value.user_message().startswith(f"{path}: not valid YAML at line")


def test_secret_pasted_instead_of_env_name_is_not_echoed(tmp_path: Path) -> None:
    secret = "Bearer s3cr3t-token-value"
    text = f'services:\n  p:\n    targets: ["http://a:1"]\n    auth_header_env: "{secret}"\n'
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, text))
    assert "services.p.auth_header_env" in err.value.user_message()
    assert "s3cr3t" not in err.value.user_message()


def test_credentials_in_a_target_url_are_refused_without_echo(tmp_path: Path) -> None:
    text = 'services:\n  p:\n    targets: ["http://admin:pa55word@10.0.0.5:6060"]\n'
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, text))
    assert "services.p.targets[0]: holds credentials" in err.value.user_message()
    assert "pa55word" not in err.value.user_message()


def test_registry_errors_end_their_sentence_before_the_next(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, "services:\n  p:\n    targets: []\n"))
    assert "not 0. Fix the registry file" in err.value.user_message()
    with pytest.raises(ConfigError) as err:
        load_registry(write(tmp_path, 'services:\n  p:\n    targets: ["htp://x"]\n'
                                      "    timeout_seconds: -1\n    bogus: 1\n"))
    assert "(and 2 more). Other problems:" in err.value.user_message()


def test_missing_file_gives_empty_registry_with_setup_hint(tmp_path: Path) -> None:
    registry = load_registry(tmp_path / "absent.yaml")
    assert len(registry) == 0 and registry.found is False
    with pytest.raises(UnknownServiceError) as err:
        registry.resolve("payments")
    message = err.value.user_message()
    assert "no registry file at" in message and "HEAPBOT_CONFIG" in message
    # which directory was looked in, even for a relative HEAPBOT_CONFIG, and the demo's way
    relative = load_registry(Path("absent-here.yaml"))
    assert f"no registry file at {Path.cwd() / 'absent-here.yaml'}." in relative.setup_hint()
    assert "`make demo` leaves one in its checkout" in relative.setup_hint()


def test_headers_come_from_env_and_unset_env_is_a_config_error(tmp_path: Path) -> None:
    payments = load_registry(write(tmp_path, GOOD)).resolve("payments")
    env = {"PAYMENTS_PPROF_AUTH": "Basic abc", "PAYMENTS_TOKEN": "t0k"}
    assert payments.request_headers(env) == {"Authorization": "Basic abc", "X-Token": "t0k"}
    with pytest.raises(ConfigError) as err:
        payments.request_headers({"PAYMENTS_TOKEN": "t0k"})
    assert "PAYMENTS_PPROF_AUTH" in err.value.user_message()


def test_allow_lists(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, GOOD))
    payments = registry.resolve("payments")
    payments.check_access("C0123456")
    payments.check_access("COTHER", ["S999"])
    registry.resolve("checkout").check_access("ANY")
    with pytest.raises(AccessDeniedError):
        payments.check_access("COTHER", ["S1"])
