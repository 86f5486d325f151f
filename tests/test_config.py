"""Settings parsing: unknown and badly typed keys are ignored, and each is described for the user."""

from __future__ import annotations

from lsp_server.config import Settings, describe_ignored, setting_names


def test_update_returns_what_it_ignored() -> None:
    settings = Settings()
    ignored = settings.update({"infill": {"maxTokensSingleLine": 12, "maxTokenSingleLine": 5, "enable": "yes"}})
    assert settings.max_tokens_single_line == 12 and settings.enable is True
    assert ignored == ["maxTokenSingleLine", "enable"]


def test_a_misspelt_key_names_the_closest_valid_one() -> None:
    assert "did you mean 'maxTokensSingleLine'?" in describe_ignored("maxTokenSingleLine")
    assert "did you mean 'disabledLanguages'?" in describe_ignored("disabled_language")
    assert "did you mean 'latencyBudgetMs'?" in describe_ignored("latencybudgetms")
    message = describe_ignored("completelyUnrelated")
    assert "unknown setting 'completelyUnrelated'" in message and "did you mean" not in message
    assert "maxTokensSingleLine" in message  # with nothing close, the valid keys are listed


def test_a_known_key_with_a_bad_value_says_so() -> None:
    message = describe_ignored("enable")
    assert "wrong type" in message and "unknown" not in message


def test_setting_names_are_the_documented_camel_case_keys() -> None:
    names = setting_names()
    assert "maxTokensSingleLine" in names and "disabledLanguages" in names and "model" in names
    assert all("_" not in name for name in names)
