"""Settings: parsed once from TAILOR_* variables, bad values refused by name, all documented."""
import re
from pathlib import Path

import pytest

from service.settings import Settings, SettingsError

README = Path(__file__).resolve().parents[1] / "README.md"


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
])
def test_bad_settings_are_named(env, fragment):
    with pytest.raises(SettingsError) as e:
        Settings.from_env(env)
    assert fragment in str(e.value)


def test_every_setting_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `(TAILOR_[A-Z0-9_]+)`", README.read_text(), flags=re.M))
    fields = {"TAILOR_" + f.upper() for f in Settings.model_fields}
    assert fields - documented == set(), "undocumented settings"
    assert documented - fields == set(), "documented settings that do not exist"
