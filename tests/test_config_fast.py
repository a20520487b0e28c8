"""The config's fast path (libyaml with ruamel's YAML 1.2 resolution) reads documents exactly as ruamel's
round-trip loader does, or declines and leaves them to it (which also gives the positioned errors)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

from tracker.config import _fast_loader, _fast_parse, _parse_located, parse_config

ROOT = Path(__file__).resolve().parents[1]

SCALARS = ["NO", "no", "on", "off", "yes", "y", "0777", "1:30", "07:30", "1_000", ".5", "+.5", "1e3", "12e03",
           "1.0e+3", "~", "", "null", "Null", "NULL", "nULL", "0x1F", "0o17", "0b101", "+1", "-0", "-12",
           "-.inf", ".inf", ".NaN", "1.", "0.", "True", "TRUE", "tRUE", "false", "'5'", '"0777"', "1,000",
           "12.50 €", "€12", "https://shop.example/p/1?a=1&b=2", "a: b", "'${SMTP_PASSWORD}'", "$5"]


def plain(value):  # type: ignore[no-untyped-def]
    """ruamel's round-trip types as plain Python (ScalarInt is an int, CommentedMap a dict...)."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value) if isinstance(value, str) else value


@pytest.mark.parametrize("scalar", SCALARS)
def test_plain_and_quoted_scalars_read_as_ruamel_reads_them(scalar):
    doc = f"k: {scalar}\nlist: [{scalar if ',' not in scalar and ': ' not in scalar else 'x'}]\n"
    try:
        expected = plain(YAML(typ="rt").load(doc))
    except Exception:  # noqa: BLE001 - what ruamel refuses, the fast path must decline too
        with pytest.raises(Exception):
            yaml.load(doc, Loader=_fast_loader())
        return
    got = yaml.load(doc, Loader=_fast_loader())
    if isinstance(expected["k"], float) and math.isnan(expected["k"]):
        assert math.isnan(got["k"])
        return
    assert got == expected
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


def test_the_example_config_takes_the_fast_path_and_gives_the_same_config(monkeypatch):
    text = (ROOT / "config" / "tracker.example.yaml").read_text()
    env = {"SMTP_PASSWORD": "secret", "TRACKER_SMTP_PASSWORD": "secret"}
    fast = _fast_parse(text, "example.yaml", env)
    assert fast is not None
    assert fast.model_dump() == _parse_located(text, "example.yaml", env).model_dump()


@pytest.mark.parametrize("doc", [
    "database: a\ndatabase: b\n",                          # duplicate key: ruamel names it, with its line
    "base: &b {fetch: http}\nrivals:\n  - <<: *b\n    name: X\n",  # merge keys
    "%YAML 1.1\n---\ndatabase: x\n",                        # a version directive
    "when: 2026-01-01\n",                                   # a timestamp
    "database: !custom x\n",                                # an application tag
    "- a\n- b\n",                                           # not a mapping
    "rivals: [{name: X, products: [{url: 'htp://x'}]}]\n",  # invalid: errors need positions
])
def test_documents_the_fast_path_cannot_vouch_for_go_to_ruamel(doc):
    assert _fast_parse(doc, "c.yaml", {}) is None


def test_errors_still_name_file_line_and_field():
    from tracker.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config("database: sqlite:///x.db\nrivals:\n  - name: X\n    products:\n      - url: htp://x\n",
                     source="c.yaml", env={})
    assert "c.yaml:5:" in str(err.value) and "rivals[0].products[0].url" in str(err.value)
