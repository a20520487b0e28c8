"""Bad input: any YAML, however malformed, gives a clear ConfigError and never a traceback (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.config import parse_config
from tracker.errors import ConfigError

yaml_ish = st.text(alphabet=st.sampled_from(list("abc:-[]{}'\"\n #&*!|>%@`\t,?0123456789$")), max_size=200)


@settings(max_examples=1500, deadline=None)
@given(yaml_ish)
def test_any_text_gives_a_config_or_a_config_error_never_a_traceback(text):
    try:
        parse_config(text, source="fuzz.yaml", env={})
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("fuzz.yaml") for p in exc.problems)


@settings(max_examples=500, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["rivals", "name", "products", "url", "email", "to", "http",
                                         "selectors", "price", "timezone", "schedules", "x"]), c, max_size=4),
                    max_leaves=20))
def test_any_structure_gives_a_config_or_a_config_error(data):
    import yaml as pyyaml

    try:
        parse_config(pyyaml.safe_dump(data), source="fuzz.yaml", env={})
    except ConfigError as exc:
        assert exc.problems
