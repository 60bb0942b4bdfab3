"""Settings: parsed once from TAILOR_* variables, bad values refused by name, all documented."""
import re
from pathlib import Path

import pytest

from service.settings import Settings, SettingsError

README = Path(__file__).resolve().parents[3] / "README.md"


def test_defaults():
    s = Settings.from_env({})
    assert s.backbone_path is None and s.cache_size == 256 and s.limits().max_inputs == 256


def test_values_are_parsed():
    s = Settings.from_env({"TAILOR_CACHE_SIZE": "3", "TAILOR_STORE_PATH": "/x", "PATH": "/bin"})
    assert s.cache_size == 3 and str(s.store_path) == "/x"


@pytest.mark.parametrize("env,fragment", [
    ({"TAILOR_CACHE_SIZE": "lots"}, "TAILOR_CACHE_SIZE"),
    ({"TAILOR_CACHE_SIZE": "0"}, "TAILOR_CACHE_SIZE"),
    ({"TAILOR_CAHCE_SIZE": "3"}, "unknown setting TAILOR_CAHCE_SIZE"),
    ({"TAILOR_BATCH_WAIT_MS": "-1"}, "TAILOR_BATCH_WAIT_MS"),
    ({"TAILOR_MAX_ADAPTERS_PER_TENANT": "0"}, "TAILOR_MAX_ADAPTERS_PER_TENANT"),
    ({"TAILOR_REQUIRE_API_KEYS": "maybe"}, "TAILOR_REQUIRE_API_KEYS"),
    ({"TAILOR_ROLE": "trainer"}, "TAILOR_ROLE: Input should be 'all', 'serve' or 'train'"),
    ({"TAILOR_JOB_ATTEMPTS": "0"}, "TAILOR_JOB_ATTEMPTS"),
    ({"TAILOR_JOB_LEASE_S": "0.1"}, "TAILOR_JOB_LEASE_S"),
    ({"TAILOR_MAX_CONCURRENT_CREATES": "0"}, "TAILOR_MAX_CONCURRENT_CREATES"),
    ({"TAILOR_METRICS_MAX_SERIES": "0"}, "TAILOR_METRICS_MAX_SERIES"),
    ({"TAILOR_REQUIRE_API_KEYS": "true"}, "TAILOR_REQUIRE_API_KEYS=true but no API keys are configured"),
    ({"TAILOR_REQUIRE_API_KEYS": "true", "TAILOR_API_KEYS_FILE": ""}, "set TAILOR_API_KEYS_FILE"),
])
def test_bad_settings_are_named(env, fragment):
    with pytest.raises(SettingsError) as e:
        Settings.from_env(env)
    assert fragment in str(e.value)


def test_tenant_settings():
    s = Settings.from_env({})
    assert s.max_adapters_per_tenant == 1000 and not s.require_api_keys
    assert s.api_keys_file is None and s.api_keys is None
    s = Settings.from_env({"TAILOR_REQUIRE_API_KEYS": "true", "TAILOR_API_KEYS_FILE": "/etc/tailor/secrets/api-keys",
                           "TAILOR_MAX_ADAPTERS_PER_TENANT": "5"})
    assert s.require_api_keys and str(s.api_keys_file) == "/etc/tailor/secrets/api-keys"
    assert s.max_adapters_per_tenant == 5


def test_inline_keys_are_hidden_from_repr_and_errors():
    key = "k" * 24
    s = Settings.from_env({"TAILOR_API_KEYS": f"{key} acme", "TAILOR_REQUIRE_API_KEYS": "true"})
    assert s.api_keys.get_secret_value() == f"{key} acme"
    assert key not in repr(s) and key not in str(s.model_dump())
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"TAILOR_API_KEYS": f"{key} acme", "TAILOR_CACHE_SIZE": "0"})
    assert key not in str(e.value)


def test_the_clis_variables_do_not_stop_the_server():
    """`tailor --api-key` reads TAILOR_API_KEY, `--url` TAILOR_URL: a shell with them set can
    still start the server (any other unknown TAILOR_* still stops it)."""
    s = Settings.from_env({"TAILOR_API_KEY": "k" * 24, "TAILOR_URL": "http://x:3000"})
    assert s == Settings()


def test_every_setting_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `(TAILOR_[A-Z0-9_]+)`", README.read_text(), flags=re.M))
    fields = {"TAILOR_" + f.upper() for f in Settings.model_fields}
    assert fields - documented == set(), "undocumented settings"
    assert documented - fields == set(), "documented settings that do not exist"


def test_every_request_limit_is_defined_once_and_is_exactly_one_setting():
    """adapters/limits.py is the one definition: each of its fields is one TAILOR_* setting
    with the same default, bounds and description, and ``Settings.limits()`` hands every
    one of them (set or default) to the domain's ``Limits``."""
    from adapters.limits import Limits, RequestLimits

    names = list(RequestLimits.model_fields)
    assert set(names) <= set(Settings.model_fields) and len(names) >= 12
    for name in names:  # not re-declared in Settings with another default, bound or text
        assert repr(Settings.model_fields[name]) == repr(RequestLimits.model_fields[name]), name
    assert set(Limits.model_fields) - set(names) == {"modality"}  # not a setting: the backbone's
    env = {f"TAILOR_{name.upper()}": str(RequestLimits.model_fields[name].default + i + 1)
           for i, name in enumerate(names)}
    limits = Settings.from_env(env).limits()
    assert {n: getattr(limits, n) for n in names} == {n: int(env[f"TAILOR_{n.upper()}"]) for n in names}
    assert Settings.from_env({}).limits() == Limits()


@pytest.mark.parametrize("env, message", [
    ({"TAILOR_MAX_EXAMPLES": "1"}, "invalid settings: TAILOR_MAX_EXAMPLES: Input should be greater than or equal to 2"),
    ({"TAILOR_MAX_IMAGE_BYTES": "1000"}, "invalid settings: TAILOR_MAX_IMAGE_BYTES: Input should be greater than or equal to 1024"),
    ({"TAILOR_MAX_INPUTS": "many"}, "invalid settings: TAILOR_MAX_INPUTS: Input should be a valid integer, unable to parse string as an integer"),
])
def test_a_bad_limit_is_refused_by_its_setting_name(env, message):
    with pytest.raises(SettingsError) as e:
        Settings.from_env(env)
    assert str(e.value) == message


def test_the_domain_refuses_a_limit_it_cannot_work_with():
    from pydantic import ValidationError

    from adapters.limits import Limits

    with pytest.raises(ValidationError, match="max_inputs"):
        Limits(max_inputs=0)
    with pytest.raises(ValidationError, match="frozen"):
        Limits().max_inputs = 5  # type: ignore[misc]
