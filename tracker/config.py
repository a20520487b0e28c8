"""The YAML configuration: pydantic models that are the documentation of every option.

`load_config(path)` reads the file with positions (ruamel.yaml), interpolates `${ENV_VAR}` in strings,
validates, and raises `ConfigError` whose lines read `file:line:col: path: message`. Unknown keys are
errors with a "did you mean" suggestion. Secret fields (passwords, API keys) accept only `${VAR}` (or a
`*_file:` path), so a secret never sits in the file in plain text, and they are never printed.
"""

from __future__ import annotations

import difflib
import os
import re
from decimal import Decimal
from pathlib import Path
from collections.abc import Hashable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from scrapers.types import ListingSelectors, Selectors
from tracker.alerts import AlertsConfig
from tracker.errors import ConfigError

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_FIELDS = frozenset({"password", "api_key", "token"})


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _cron(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger  # only configs with schedules pay for the import

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday): {exc}")
    return value


Cron = Annotated[str, AfterValidator(_cron)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SelectorsConfig(Strict):
    """CSS selectors; each one overrides automatic extraction of that field."""

    price: str | None = None
    regular_price: str | None = None
    promotion: str | None = None
    availability: str | None = None
    name: str | None = None
    sku: str | None = None
    wait_for: str | None = Field(None, description="browser: wait for this selector before reading")

    def to_selectors(self) -> Selectors:
        return Selectors(**self.model_dump())


class ProductConfig(Strict):
    """One rival product page to watch."""

    url: HttpUrl
    name: str | None = None
    match: str | None = Field(None, description="key that ties the same product across shops")
    group: str | None = Field(None, description="product group, for alert rules")
    selectors: SelectorsConfig | None = None
    fetch: Literal["http", "browser", "auto"] | None = None


class ListingSelectorsConfig(Strict):
    item: str | None = None
    link: str | None = None
    name: str | None = None
    price: str | None = None
    regular_price: str | None = None
    badge: str | None = None
    next: str | None = None

    def to_selectors(self) -> ListingSelectors:
        return ListingSelectors(**self.model_dump())


class ListingConfig(Strict):
    """A category / offers / search page whose product cards are watched as an assortment."""

    url: HttpUrl
    name: str | None = None
    item: str | None = Field(None, description="CSS selector of one product card; found automatically if unset")
    link: str | None = Field(None, description="inside a card: the product link (default: first <a href>)")
    title: str | None = Field(None, description="inside a card: the product name")
    price: str | None = None
    regular_price: str | None = None
    badge: str | None = None
    next: str | None = Field(None, description="the 'next page' link or button")
    max_pages: int = Field(5, ge=1, le=100, description="pagination is followed up to this many pages")
    confirm_removal_after: int = Field(2, ge=1, le=20,
                                       description="complete passes without a product before it is 'removed'")
    fetch: Literal["http", "browser", "auto"] | None = Field(
        None, description="browser also scrolls infinite lists to the end")


class DiscoveryConfig(Strict):
    """Finding a rival's products in its sitemaps and listings (`tracker discover`, and on a schedule)."""

    include: list[str] = Field([], description="URL patterns to keep: shell glob, or re:regex")
    exclude: list[str] = Field([], description="URL patterns to drop")
    max_new: int = Field(100, ge=1, le=100_000, description="at most this many new products per discovery")
    auto_track: bool = Field(False, description="track newly found products with no further action")


class RivalConfig(Strict):
    """A competitor shop and the pages of it to watch."""

    name: str = Field(min_length=1)
    domain: str | None = Field(None, description="the rival's domain; defaults to its first URL's host")
    own: bool = Field(False, description="true for your own shop: its prices are the reference")
    fetch: Literal["http", "browser", "auto"] = "auto"
    respect_robots: bool | None = Field(None, description="override http.respect_robots for this rival")
    products: list[ProductConfig] = []
    listings: list[ListingConfig] = []
    discovery: DiscoveryConfig = DiscoveryConfig()
    seo_pages: list[HttpUrl] = Field([], description="pages whose on-page SEO is tracked")
    track_seo: bool = Field(False, description="also track on-page SEO of its product and listing pages")

    @model_validator(mode="after")
    def _domain(self) -> "RivalConfig":
        if self.domain is None:
            urls = [p.url for p in self.products] + [li.url for li in self.listings]
            if urls:
                object.__setattr__(self, "domain", urlsplit(urls[0]).hostname)
        return self


class KeywordConfig(Strict):
    """A search term whose ranking is tracked on one engine, locale and device."""

    term: str = Field(min_length=1)
    engine: str = Field("google", description="google | bing | duckduckgo | serpapi | a name under engines:")
    locale: str = Field("en-US", pattern=r"^[a-z]{2,3}(-[A-Za-z]{2})?$")
    device: Literal["desktop", "mobile"] = "desktop"
    depth: int = Field(10, ge=10, le=100, description="results to read, following pagination")
    tags: list[str] = []
    rank_change: int = Field(1, ge=1, description="smallest position move reported")
    top_n: int = Field(10, ge=1, le=100, description="'entered/left the top N' is reported for this N")


class CustomEngineConfig(Strict):
    """A marketplace's own search, tracked like a search engine."""

    url_template: str = Field(description="e.g. https://market.example/search?q={term}&page={page}")
    result: str = Field(description="CSS selector of one result")
    link: str | None = None
    title: str | None = None
    next: str | None = None

    @field_validator("url_template")
    @classmethod
    def _template(cls, v: str) -> str:
        _http_url(v.replace("{term}", "x").replace("{page}", "1").replace("{offset}", "0"))
        if "{term}" not in v:
            raise ValueError("url_template must contain {term}")
        return v


class SerpConfig(Strict):
    """Politeness and sources for rankings."""

    delay_s: tuple[float, float] = Field((8.0, 20.0), description="random pause between queries to one engine")
    concurrency_per_engine: int = Field(1, ge=1, le=4)
    api_key: SecretStr | None = Field(None, description="SerpApi key, only as ${SERPAPI_API_KEY}")
    serpapi_url: str = "https://serpapi.com"


class EmailConfig(Strict):
    """Where reports go. With no smtp_url, reports are written to outbox_dir as .eml + .html."""

    smtp_url: str | None = Field(
        None, description="smtp://user@host:587 (STARTTLS when offered) or smtps://user@host:465 (TLS)")
    password: SecretStr | None = Field(None, description="only as ${ENV_VAR}, e.g. ${TRACKER_SMTP_PASSWORD}")
    starttls: bool | None = Field(None, description="force STARTTLS on/off; default: use it when offered")
    timeout_s: float = Field(30, gt=0)
    from_: str = Field("rivalwatch@localhost", alias="from")
    to: list[str] = []
    subject: str = "Rivalwatch: {changes} changes"
    outbox_dir: Path = Path("outbox")

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"{_mask_url(v)!r} is not an smtp:// or smtps:// URL")
        if parts.password:
            raise ValueError("put the SMTP password in email.password as ${ENV_VAR}, not in the URL")
        return v

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for addr in v:
            if "@" not in addr:
                raise ValueError(f"{addr!r} is not an e-mail address")
        return v


class BrowserConfig(Strict):
    """The headless Chromium driven by Playwright."""

    executable: Path | None = Field(
        None, description="Chromium binary; else $TRACKER_CHROMIUM, else a system Chromium, else Playwright's")
    concurrency: int = Field(4, ge=1, le=32, description="pages open at once")
    block: list[Literal["image", "font", "media", "stylesheet"]] = ["image", "font", "media"]
    timeout_s: float = Field(30, gt=0)
    headless: bool = True


class HttpConfig(Strict):
    """The plain HTTP fetcher and politeness limits."""

    timeout_s: float = Field(20, gt=0)
    user_agent: str = "Mozilla/5.0 (compatible; Rivalwatch/0.1; +https://github.com/rivalwatch)"
    max_bytes: int = Field(5_000_000, ge=10_000, description="pages larger than this are cut off: failed")
    retries: int = Field(2, ge=0, le=10, description="retries with backoff on timeouts, 5xx and 429")
    per_domain_concurrency: int = Field(2, ge=1, le=64)
    per_domain_delay_s: float = Field(1.0, ge=0, description="pause between requests to one domain")
    respect_robots: bool = True
    verify_tls: bool = True
    max_connections: int = Field(64, ge=1)


class SchedulesConfig(Strict):
    """Cron expressions (minute hour day month weekday) in `timezone`."""

    prices: Cron | None = "0 7,13,19 * * *"
    rankings: Cron | None = None
    report: Cron | None = "30 7 * * *"
    discovery: Cron | None = Field("0 5 * * 1", description="sitemap/listing discovery for rivals with "
                                                           "discovery.auto_track (Mondays 05:00 by default)")
    jitter_s: int = Field(0, ge=0, description="random delay added to each run, spreads load")
    misfire_grace_s: int = Field(3600, ge=1, description="a run missed by less than this still runs, once")


class ThresholdsConfig(Strict):
    """Noise control for the diff engine."""

    price_change_pct: Decimal = Field(Decimal("0"), ge=0, description="smallest |%| price move reported")
    health_after: int = Field(3, ge=1, description="report a target failing this many runs in a row")
    rating_drop: Decimal = Field(Decimal("0.2"), gt=0, description="report a product rating falling this much")
    review_jump_pct: Decimal = Field(Decimal("25"), gt=0,
                                     description="report review counts growing this % between two checks ...")
    review_jump_min: int = Field(10, ge=1, description="... and by at least this many reviews")


class QueueConfig(Strict):
    """Scale-out: checks sent to `tracker worker` processes through Dramatiq (see README)."""

    broker: str | None = Field(None, description="redis://host:6379/0; else $TRACKER_BROKER_URL; else in-process")
    heartbeat_timeout_s: float = Field(60, gt=0, description="a silent worker's messages are redelivered after this")
    resend_after_s: float = Field(600, gt=0, description="a slot with no result after this is sent again")
    lease_ttl_s: float = Field(30, gt=0, description="dispatcher failover time")
    tick_s: float = Field(1, gt=0, description="how often the dispatcher looks for due targets")
    worker_threads: int = Field(16, ge=1, description="checks in flight per worker process")
    max_attempts: int = Field(5, ge=1, description="deliveries of one message before it is given up")


class Config(Strict):
    """The whole configuration file."""

    database: str = "sqlite:///tracker.db"
    timezone: str = "UTC"
    locale: str = "en_US"
    own_domain: str | None = None
    email: EmailConfig = EmailConfig()
    browser: BrowserConfig = BrowserConfig()
    http: HttpConfig = HttpConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    queue: QueueConfig = QueueConfig()
    rivals: list[RivalConfig] = []
    keywords: list[KeywordConfig] = []
    engines: dict[str, CustomEngineConfig] = {}
    serp: SerpConfig = SerpConfig()
    alerts: AlertsConfig = AlertsConfig()

    # Where this config was read from (not a YAML key): relative paths are resolved against its folder.
    source: Path | None = Field(None, exclude=True)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone such as 'Europe/Madrid'")
        return v

    @field_validator("database")
    @classmethod
    def _db(cls, v: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError(f"{_mask_url(v)!r} is not a sqlite:/// or postgresql+psycopg:// URL")
        return v

    @field_validator("rivals")
    @classmethod
    def _unique_rivals(cls, rivals: list[RivalConfig]) -> list[RivalConfig]:
        seen: set[str] = set()
        for r in rivals:
            if r.name in seen:
                raise ValueError(f"rival name {r.name!r} is used twice")
            seen.add(r.name)
        return rivals

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def resolve(self, path: Path) -> Path:
        """A path from the config, relative to the config file's folder."""
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path


def _mask_url(url: str) -> str:
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)


# ----------------------------------------------------------------------------------------------------------
# Loading with positions

class _Located:
    """Positions of every key and item of a ruamel round-trip tree, for error messages."""

    def __init__(self, root: Any):
        self.root = root

    def position(self, loc: tuple[Any, ...], *, key: bool = False) -> tuple[int, int] | None:
        """Line and column (0-based) of the value at `loc`, or of its key when `key` is set."""
        node = self.root
        pos: tuple[int, int] | None = None
        for i, part in enumerate(loc):
            if isinstance(node, CommentedMap):
                name = part
                if name not in node and isinstance(name, str):
                    name = name.rstrip("_")  # pydantic field `from_` is YAML key `from`
                if name not in node:
                    break
                line, col = node.lc.key(name)[:2]
                vline, vcol = node.lc.value(name)[:2] if node.lc.value(name) else (line, col)
                node = node[name]
                leaf = not isinstance(node, (CommentedMap, CommentedSeq))
                pos = (line, col) if (key and i == len(loc) - 1) or not leaf else (vline, vcol)
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                pos = tuple(node.lc.item(part)[:2])  # type: ignore[assignment]
                node = node[part]
            else:
                break
        return pos


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at the parent of `loc`, for 'did you mean'."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part) or next(
            (f for n, f in current.model_fields.items() if f.alias == part), None)
        if field is None:
            return []
        current = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items() if n != "source"]
    return []


def _inner_model(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _interpolate(node: Any, located: _Located, loc: tuple[Any, ...], problems: list[str], where: str,
                 env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, located, loc + (k,), problems, where, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, located, loc + (i,), problems, where, env) for i, v in enumerate(node)]
    key = loc[-1] if loc else None
    if isinstance(key, str) and key.endswith("_file") and key[:-5] in SECRET_FIELDS:
        return node
    if isinstance(node, str):
        is_secret = key in SECRET_FIELDS
        if is_secret and not ENV_PATTERN.fullmatch(node.strip()):
            problems.append(_problem(where, located, loc,
                                     f"a secret must come from the environment, write ${{{_env_name(loc)}}} "
                                     f"(the value in the file is not shown)"))
            return None

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(_problem(where, located, loc,
                                     f"environment variable {name} is not set (referenced as ${{{name}}})"))
            return ""

        return ENV_PATTERN.sub(sub, node)
    return node


def _env_name(loc: tuple[Any, ...]) -> str:
    return "TRACKER_" + "_".join(str(p).upper() for p in loc if isinstance(p, str))


def _problem(where: str, located: _Located, loc: tuple[Any, ...], message: str, *, key: bool = False) -> str:
    pos = located.position(loc, key=key)
    prefix = f"{where}:{pos[0] + 1}:{pos[1] + 1}" if pos else where
    return f"{prefix}: {_format_loc(loc)}: {message}"


def _read_secret_files(data: Any, base: Path, problems: list[str], where: str) -> None:
    """`password_file: /run/secrets/smtp` reads the secret from a file (Docker/Kubernetes secrets)."""
    if isinstance(data, dict):
        for key in list(data):
            if isinstance(key, str) and key.endswith("_file") and key[:-5] in SECRET_FIELDS:
                path = Path(str(data.pop(key)))
                path = path if path.is_absolute() else base / path
                try:
                    data[key[:-5]] = path.read_text().strip()
                except OSError as exc:
                    problems.append(f"{where}: {key}: cannot read secret file {path}: {exc.strerror}")
            else:
                _read_secret_files(data[key], base, problems, where)
    elif isinstance(data, list):
        for item in data:
            _read_secret_files(item, base, problems, where)


class _FastPathFailed(Exception):
    """The fast loader cannot be sure to read this document exactly as ruamel's round-trip loader does."""


_FAST_LOADER: Any = None


def _fast_loader() -> Any:
    """PyYAML's libyaml loader (C: ~15x faster than ruamel's round trip on a config of 2,000 products),
    resolving plain scalars with ruamel's own YAML 1.2 table, so both read a document alike ("NO" and "on"
    stay strings, "0777" is 777). It refuses what it cannot read identically: duplicate keys (ruamel
    reports them), timestamps, and anything it cannot construct. None when libyaml is not installed."""
    global _FAST_LOADER
    if _FAST_LOADER is None:
        try:
            import yaml
            from ruamel.yaml.resolver import implicit_resolvers
            base = yaml.CSafeLoader
        except (ImportError, AttributeError):
            _FAST_LOADER = False
            return None

        class Loader(base):  # type: ignore[misc,valid-type]
            def construct_yaml_int(self, node: Any) -> int:
                text = str(self.construct_scalar(node)).replace("_", "")
                sign = -1 if text.startswith("-") else 1
                text = text.lstrip("+-")
                for prefix, radix in (("0b", 2), ("0o", 8), ("0x", 16)):
                    if text.startswith(prefix):
                        return sign * int(text[2:], radix)
                return sign * int(text, 10)

            def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
                keys = [self.construct_object(k, deep=True) for k, _ in node.value]
                if any(not isinstance(k, Hashable) for k in keys) or len(set(keys)) != len(keys):
                    raise _FastPathFailed("duplicate or unhashable keys")
                return super().construct_mapping(node, deep=deep)

            def refuse(self, node: Any) -> Any:
                raise _FastPathFailed(node.tag)

        Loader.yaml_implicit_resolvers = {}
        for versions, tag, regexp, first in implicit_resolvers:
            if (1, 2) in versions and tag.rsplit(":", 1)[-1] not in ("value", "yaml"):
                Loader.add_implicit_resolver(tag, regexp, first)
        Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
        Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.refuse)
        Loader.add_constructor(None, Loader.refuse)
        _FAST_LOADER = Loader
    return _FAST_LOADER or None


def _fast_parse(text: str, source: str | Path, env: dict[str, str]) -> Config | None:
    """The config when the fast loader reads it and it has no problem at all; else None, and the caller
    reads it again with ruamel's round trip, which knows where everything is for the error messages."""
    loader = _fast_loader()
    if loader is None or re.search(r"(?m)^%", text):  # a %YAML/%TAG directive: leave it to ruamel
        return None
    import yaml

    try:
        root = yaml.load(text, Loader=loader)
    except (yaml.YAMLError, _FastPathFailed, ValueError, TypeError, RecursionError):
        return None
    if not isinstance(root, dict):
        return None
    config, problems = _to_config(root, _Located(None), source, env)
    return None if problems else config


def parse_config(text: str, *, source: str | Path = "<config>", env: dict[str, str] | None = None) -> Config:
    """Validate YAML text into a Config, or raise ConfigError naming file, line, column and field."""
    env = dict(os.environ) if env is None else env
    config = _fast_parse(text, source, env)
    if config is None:
        config = _parse_located(text, source, env)
    if isinstance(source, Path):
        config = config.model_copy(update={"source": source.resolve()})
    return config


def _parse_located(text: str, source: str | Path, env: dict[str, str]) -> Config:
    where = str(source)
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError([f"{where}{pos}: not valid YAML: {exc.problem or exc.context}"]) from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise ConfigError([f"{where}: not valid YAML: {exc}"]) from None
    if root is None:
        root = CommentedMap()
    if not isinstance(root, CommentedMap):
        raise ConfigError([f"{where}:1:1: the file must be a mapping of options (key: value), "
                           f"found {'a list' if isinstance(root, list) else 'a single value'}"])
    config, problems = _to_config(root, _Located(root), source, env)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def _to_config(root: dict[str, Any], located: _Located, source: str | Path, env: dict[str, str]
               ) -> tuple[Config | None, list[str]]:
    """The loaded document as a Config: environment and secret-file values filled in, then validated.
    Returns the Config (None if it is not valid) and every problem found."""
    where = str(source)
    problems: list[str] = []
    data = _interpolate(root, located, (), problems, where, env)
    # A value whose interpolation failed gets one message, not a second one from validation.
    bad_places = {p.split(": ", 2)[1] for p in problems if ": " in p}
    base = Path(source).parent if isinstance(source, Path) else Path(".")
    _read_secret_files(data, base, problems, where)
    if env.get("TRACKER_DATABASE_URL"):
        # The environment wins over the file, so one config serves several machines (Compose, Kubernetes).
        data["database"] = env["TRACKER_DATABASE_URL"]
    try:
        config: Config | None = Config.model_validate(data)
    except ValidationError as exc:
        config = None
        problems += [line for line in (_describe(err, located, where) for err in exc.errors())
                     if line.split(": ", 2)[1] not in bad_places]
    return config, problems


def _describe(err: Any, located: _Located, where: str) -> str:
    loc = tuple(err["loc"])
    # Drop pydantic's union/tag markers from the path.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_fields(Config, loc) if loc else []
        name = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f", did you mean {close[0]!r}?" if close else (f"; expected one of: {', '.join(known)}"
                                                              if known else "")
        message = f"unknown key {name!r}{hint}"
    elif kind == "missing":
        message = "this field is required"
    else:
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if any(isinstance(p, str) and p in SECRET_FIELDS for p in loc):
            message = message.split(" [")[0]
        elif kind not in ("value_error", "assertion_error") and "input" in err and not isinstance(
                err["input"], (dict, list)):
            message = f"{message}, got {err['input']!r}"
    return _problem(where, located, loc, message, key=kind == "extra_forbidden")


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file (see config/tracker.example.yaml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file; copy config/tracker.example.yaml to start"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    return parse_config(text, source=path)


def redacted(config: Config) -> dict[str, Any]:
    """The config as a dict safe to print: secrets masked."""
    data = config.model_dump(mode="json", by_alias=True, exclude={"source"})
    data["database"] = _mask_url(config.database)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            # Apprise chat URLs carry their tokens in the URL: masked like secrets.
            return {k: ("***" if (k in SECRET_FIELDS or k == "chat") and v else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(data)


def broker_url(config: Config) -> str | None:
    """The configured broker: `queue.broker`, else $TRACKER_BROKER_URL, else None (in-process).

    Here rather than in tracker.queue so that a command can ask without importing Dramatiq and Redis."""
    return config.queue.broker or os.environ.get("TRACKER_BROKER_URL") or None
