"""The config file: the example validates, and bad input gets file:line:col: field: message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tracker.config import load_config, parse_config, redacted
from tracker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BROKEN = """\
database: sqlite:///x.db
timezone: Europe/Madrid
rivals:
  - name: One
    products:
      - url: https://one.example/p/1
      - url: https://one.example/p/2
      - url: "htp://x"
        selectrs: {price: .p}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="config/tracker.yaml", env=env or {})
    return info.value.problems


def test_example_config_documents_a_valid_config():
    config = parse_config((ROOT / "config/tracker.example.yaml").read_text(),
                          env={"TRACKER_SMTP_PASSWORD": "x"})
    assert config.rivals[0].products[1].selectors.price == ".price-now"
    assert config.rivals[0].domain == "rival-one.example"


def test_bad_url_is_reported_with_file_line_column_and_field():
    assert "config/tracker.yaml:8:14: rivals[0].products[2].url: 'htp://x' is not an http(s) URL" in problems(BROKEN)


def test_unknown_key_suggests_the_close_one():
    assert ("config/tracker.yaml:9:9: rivals[0].products[2].selectrs: unknown key 'selectrs', "
            "did you mean 'selectors'?") in problems(BROKEN)


def test_unknown_key_with_nothing_close_lists_the_allowed_keys():
    (line,) = problems("rivals:\n  - name: A\n    zzz: 1\n")
    assert line.startswith("config/tracker.yaml:3:5: rivals[0].zzz: unknown key 'zzz'; expected one of: name,")


@pytest.mark.parametrize("text, expected", [
    ("timezone: Mars/Base\n", "config/tracker.yaml:1:11: timezone: 'Mars/Base' is not an IANA time zone"),
    ("schedules: {prices: '61 * * * *'}\n", "config/tracker.yaml:1:21: schedules.prices: '61 * * * *' is not a cron"),
    ("rivals:\n  - name: A\n    fetch: browsr\n", "config/tracker.yaml:3:12: rivals[0].fetch: Input should be 'http', 'browser' or 'auto'"),
    ("email: {to: [nobody]}\n", "config/tracker.yaml:1:9: email.to: 'nobody' is not an e-mail address"),
    ("database: mysql://x\n", "config/tracker.yaml:1:11: database: 'mysql://x' is not a sqlite"),
    ("rivals: [{name: A}, {name: A}]\n", "config/tracker.yaml:1:1: rivals: rival name 'A' is used twice"),
    ("rivals: [{products: []}]\n", "config/tracker.yaml:1:10: rivals[0].name: this field is required"),
    ("a: [\n", "config/tracker.yaml:2:1: not valid YAML"),
    ("- 1\n", "config/tracker.yaml:1:1: the file must be a mapping of options"),
])
def test_each_mistake_names_its_place(text, expected):
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_plain_text_secret_is_refused_and_never_printed():
    lines = problems("email: {smtp_url: 'smtp://u@h:25', password: hunter2}\n")
    assert lines == ["config/tracker.yaml:1:46: email.password: a secret must come from the environment, "
                     "write ${TRACKER_EMAIL_PASSWORD} (the value in the file is not shown)"]
    assert "hunter2" not in "\n".join(lines)


def test_secret_in_smtp_url_is_refused():
    (line,) = problems("email: {smtp_url: 'smtp://u:hunter2@h:25'}\n")
    assert "hunter2" not in line and "put the SMTP password in email.password" in line


def test_secret_comes_from_the_environment_and_is_masked_when_printed():
    config = parse_config("email: {password: '${PW}'}\n", env={"PW": "s3cret"})
    assert config.email.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(redacted(config))


def test_missing_environment_variable_is_named():
    (line,) = problems("database: '${DB_URL}'\n")
    assert line == ("config/tracker.yaml:1:11: database: environment variable DB_URL is not set "
                    "(referenced as ${DB_URL})")


def test_secret_file_is_read(tmp_path):
    (tmp_path / "pw").write_text("from-file\n")
    path = tmp_path / "t.yaml"
    path.write_text("email: {password_file: pw}\n")
    assert load_config(path).email.password.get_secret_value() == "from-file"


def test_missing_config_file_says_how_to_start(tmp_path):
    with pytest.raises(ConfigError, match="copy config/tracker.example.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_validate_command_names_file_line_and_field(tmp_path):
    path = tmp_path / "tracker.yaml"
    path.write_text(BROKEN)
    proc = subprocess.run([sys.executable, "-m", "tracker.cli", "validate", "-c", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{path}:8:14: rivals[0].products[2].url: 'htp://x' is not an http(s) URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_database_url_from_the_environment_overrides_the_file():
    config = parse_config("database: sqlite:///file.db\n", env={"TRACKER_DATABASE_URL": "postgresql://u@db/x"})
    assert config.database == "postgresql://u@db/x"
