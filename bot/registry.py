"""The service registry: which Go services heapbot can profile, and how.

It is a YAML file (``HEAPBOT_CONFIG``, default the nearest ``heapbot.yaml`` or
``.heapbot-demo/heapbot.yaml`` from the current directory upwards) validated
once at start, so a typo is reported with the file, the service and the key
instead of surfacing later as a failed capture. Secrets never live in the file:
it names environment variables whose values become request headers.
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from bot.errors import AccessDeniedError, ConfigError, UnknownServiceError
from bot.settings import DEFAULT_CONFIG, default_config_path, find_registry

# Captures that ask for a fresh heap (heap?gc=1: one forced GC on the target) unless
# the registry says otherwise: leak sampling, watch ticks and alert captures. A
# user's /heap top or capture does not, unless it says --gc.
GcTrigger = Literal["user", "sample", "watch", "alert", "schedule"]
DEFAULT_GC_TRIGGERS: tuple[GcTrigger, ...] = ("sample", "watch", "alert")
TARGET_SCHEMES = ("http", "https", "dns+http", "dns+https")
SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
SERVICES_EXAMPLE = "services:\n  payments:\n    targets: [\"http://10.0.0.5:6060\"]\n"
HOW_TO_ADD = (
    "Create heapbot.yaml with a `services:` map, e.g.\n" + SERVICES_EXAMPLE
    + "in this directory (or one above it), or point HEAPBOT_CONFIG at it "
    "(see README: Services and storage)."
)
HOW_TO_FILL = ("Add a `services:` map to it, e.g.\n" + SERVICES_EXAMPLE
               + "(see README: Services and storage).")


class _Defaults(BaseModel):
    """The ``defaults:`` block; every service inherits these unless it sets its own."""

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(10.0, gt=0, le=600)
    cooldown_seconds: float = Field(30.0, ge=0)
    retention_count: int = Field(500, ge=1)
    retention_days: float = Field(30.0, gt=0)
    max_profile_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    concurrency: int = Field(16, ge=1, le=256)
    pprof_prefix: str = "/debug/pprof"
    gc: bool = False
    gc_triggers: list[GcTrigger] = Field(default_factory=lambda: list(DEFAULT_GC_TRIGGERS))


SOURCE_MAX_BYTES = 1024 * 1024  # a source file larger than this is not shown by `list`
SOURCE_PLACEHOLDERS = frozenset({"path", "version", "build_id"})


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where a service's source files are (the registry's ``source:`` block)."""

    dir: str | None = None
    url: str | None = None
    trim_prefix: tuple[str, ...] = ()
    max_bytes: int = SOURCE_MAX_BYTES

    @property
    def configured(self) -> bool:
        return bool(self.dir or self.url)


def url_template_problem(template: str) -> str | None:
    """Why ``template`` cannot be a source URL template, or None when it can."""
    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{template!r} is not an http(s) URL template"
    if "@" in parts.netloc:
        return "holds credentials (user:password@); source URLs must not"
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        return f"{template!r} has an unbalanced {{ or }}"
    unknown = names - SOURCE_PLACEHOLDERS
    if unknown:
        return (f"unknown placeholder {{{sorted(unknown)[0]}}} (use {{path}}, {{version}}, "
                "{build_id})")
    if "path" not in names:
        return "needs {path} (the file's path in the repository)"
    if urlsplit(template.split("{", 1)[0]).hostname != parts.hostname:
        return "the host must be written out, not a placeholder"
    return None


class _SourceEntry(BaseModel):
    """A service's ``source:`` block: where `list` reads source lines (bot/source.py)."""

    model_config = ConfigDict(extra="forbid")

    dir: str | None = None
    url: str | None = None
    trim_prefix: list[str] = Field(default_factory=list)
    max_bytes: int = Field(SOURCE_MAX_BYTES, ge=1024, le=16 * 1024 * 1024)

    @field_validator("url")
    @classmethod
    def _url_template(cls, url: str | None) -> str | None:
        if url is not None and (problem := url_template_problem(url)):
            raise ValueError(problem)
        return url


class _ServiceEntry(BaseModel):
    """One service as written in the file (unset keys fall back to defaults)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str] = Field(min_length=1)
    channel: str | None = None
    aliases: list[str] = Field(default_factory=list)
    auth_header_env: str | None = None
    headers_env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(None, gt=0, le=600)
    pprof_prefix: str | None = None
    gc: bool | None = None
    gc_triggers: list[GcTrigger] | None = None
    allow_channels: list[str] = Field(default_factory=list)
    allow_usergroups: list[str] = Field(default_factory=list)
    cooldown_seconds: float | None = Field(None, ge=0)
    retention_count: int | None = Field(None, ge=1)
    retention_days: float | None = Field(None, gt=0)
    max_profile_bytes: int | None = Field(None, ge=1024)
    concurrency: int | None = Field(None, ge=1, le=256)
    source: _SourceEntry | None = None

    @field_validator("targets")
    @classmethod
    def _targets_are_urls(cls, targets: list[str]) -> list[str]:
        for index, target in enumerate(targets):
            problem = target_problem(target)
            if problem:
                raise _KeyError(f"targets[{index}]", problem)
        return [t.rstrip("/") for t in targets]

    @field_validator("auth_header_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not ENV_NAME.match(name):
            raise ValueError(  # the value is not echoed: it may be a pasted secret
                "is not an environment variable name (write the variable's name, e.g. "
                "PAYMENTS_PPROF_AUTH, never the secret itself)"
            )
        return name

    @field_validator("headers_env")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for header, env in headers.items():
            if not HEADER_NAME.match(header):
                raise _KeyError(f"headers_env.{header}", f"{header!r} is not an HTTP header name")
            if not isinstance(env, str) or not ENV_NAME.match(env):
                raise _KeyError(  # the value is not echoed: it may be a pasted secret
                    f"headers_env.{header}",
                    "is not an environment variable name (name the variable, never the "
                    "secret itself)",
                )
        return headers

    @field_validator("pprof_prefix")
    @classmethod
    def _prefix(cls, prefix: str | None) -> str | None:
        if prefix is not None and (not prefix.startswith("/") or "?" in prefix):
            raise ValueError(f"{prefix!r} must be a path starting with / (e.g. /debug/pprof)")
        return prefix


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    services: dict[str, _ServiceEntry] = Field(default_factory=dict)
    defaults: _Defaults = Field(default_factory=_Defaults)


class _KeyError(ValueError):
    """A validation problem that knows the sub-key it is about (e.g. targets[1])."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def target_problem(target: Any) -> str | None:
    """Why ``target`` is not a usable pprof base URL, or None when it is."""
    if not isinstance(target, str):
        return f"{target!r} is not a URL string"
    parts = urlsplit(target)
    if "@" in parts.netloc:  # the URL is not echoed: it holds a credential
        return ("holds credentials (user:password@); put them in an environment variable "
                "named by auth_header_env instead")
    if parts.scheme not in TARGET_SCHEMES:
        return (
            f"{target!r} is not an http(s) URL (write http://host:port, https://host:port "
            "or dns+http://name:port)"
        )
    try:
        port = parts.port
    except ValueError:
        return f"{target!r} has an invalid port"
    if not parts.hostname:
        return f"{target!r} has no host"
    if parts.query or parts.fragment:
        return f"{target!r} must not carry a query or fragment (use pprof_prefix for the path)"
    if parts.scheme.startswith("dns+") and port is None:
        return f"{target!r} needs an explicit port for DNS discovery (dns+http://name:6060)"
    return None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A service with every default applied: what capture and store need."""

    def fresh_heap(self, trigger: str, asked: bool = False) -> bool:
        """Whether a capture with this trigger fetches ``heap?gc=1`` (forces a GC).

        ``gc: true`` forces one on every capture; otherwise the triggers listed in
        ``gc_triggers`` do, and a user's ``--gc`` does.
        """
        return self.gc or asked or trigger in self.gc_triggers

    name: str
    targets: tuple[str, ...]
    channel: str | None = None
    aliases: tuple[str, ...] = ()
    auth_header_env: str | None = None
    headers_env: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 10.0
    pprof_prefix: str = "/debug/pprof"
    gc: bool = False
    gc_triggers: tuple[str, ...] = DEFAULT_GC_TRIGGERS
    allow_channels: tuple[str, ...] = ()
    allow_usergroups: tuple[str, ...] = ()
    cooldown_seconds: float = 30.0
    retention_count: int = 500
    retention_days: float = 30.0
    max_profile_bytes: int = 64 * 1024 * 1024
    concurrency: int = 16
    source: SourceConfig | None = None  # where `list` reads source lines

    def request_headers(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Headers built from the named env vars (values never logged or stored).

        A named variable that is unset is a configuration error: sending no
        credentials would only come back as a confusing 401.
        """
        env = os.environ if environ is None else environ
        headers: dict[str, str] = {}
        wanted = dict(self.headers_env)
        if self.auth_header_env:
            wanted["Authorization"] = self.auth_header_env
        for header, var in wanted.items():
            value = env.get(var)
            if not value:
                raise ConfigError(
                    f"Service `{self.name}` sends header {header} from the environment variable "
                    f"{var}, which is not set in heapbot's environment.",
                    hint="Set it (e.g. from a Kubernetes Secret) or remove the key from the "
                    "registry.",
                )
            headers[header] = value
        return headers

    @property
    def restricted(self) -> bool:
        """Whether allow lists limit who may use this service."""
        return bool(self.allow_channels or self.allow_usergroups)

    def may_post_in(self, channel_id: str) -> bool:
        """Whether heapbot may post this service's data into ``channel_id`` unasked.

        A watch's (or alert's) posts are read by everyone in the channel, so a
        restricted service posts only into its ``allow_channels``; a user group's
        membership does not make another channel safe.
        """
        return not self.restricted or channel_id in self.allow_channels

    def check_post_channel(self, channel_id: str) -> None:
        """Raise AccessDeniedError unless :meth:`may_post_in` ``channel_id``."""
        if self.may_post_in(channel_id):
            return
        allowed = ", ".join(f"#{c}" for c in self.allow_channels)
        where = f" ({allowed})" if allowed else " (it has none: only user groups may use it)"
        target = channel_id if channel_id.startswith("#") else f"#{channel_id}"
        raise AccessDeniedError(
            f"`{self.name}` posts only into its allowed channels{where}; heapbot will not "
            f"post it into {target}.",
            hint="Pick one of its allowed channels, or ask the service's owners to add this "
                 "one to allow_channels in heapbot.yaml.")

    def check_access(self, channel_id: str = "", user_groups: Sequence[str] = ()) -> None:
        """Raise AccessDeniedError unless the channel or a user group is allowed."""
        if not self.allow_channels and not self.allow_usergroups:
            return
        if channel_id and channel_id in self.allow_channels:
            return
        if set(user_groups) & set(self.allow_usergroups):
            return
        where = []
        if self.allow_channels:
            where.append("channels " + ", ".join(f"#{c}" for c in self.allow_channels))
        if self.allow_usergroups:
            where.append("user groups " + ", ".join(self.allow_usergroups))
        raise AccessDeniedError(
            f"`{self.name}` may only be profiled from " + " or ".join(where) + ".",
            hint="Ask there, or ask the service's owners to add you to the registry's allow list.",
        )


@dataclass(slots=True)
class Registry:
    """Services by name; ``resolve`` accepts names and aliases in any case."""

    services: dict[str, ServiceConfig] = field(default_factory=dict)
    path: Path | None = None
    found: bool = True  # False when the file did not exist (empty registry)
    _by_name: dict[str, ServiceConfig] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for service in self.services.values():
            self._by_name[service.name.lower()] = service
            for alias in service.aliases:
                self._by_name[alias.lower()] = service

    def __iter__(self) -> Iterator[ServiceConfig]:
        return iter(self.services.values())

    def __len__(self) -> int:
        return len(self.services)

    def names(self) -> list[str]:
        return sorted(self.services)

    def find(self, name: str) -> ServiceConfig | None:
        """The service called ``name`` (or aliased so), or None; no did-you-mean (cheap)."""
        return self._by_name.get((name or "").strip().lower())

    def suggest(self, name: str) -> list[str]:
        """Up to 3 service names close to ``name`` (difflib: slow on long input)."""
        key = (name or "").strip().lower()
        suggestions = difflib.get_close_matches(key, list(self._by_name), n=3, cutoff=0.6)
        return list(dict.fromkeys(self._by_name[s].name for s in suggestions))

    def resolve(self, name: str) -> ServiceConfig:
        """The service called ``name`` (or aliased so); UnknownServiceError with did-you-mean."""
        service = self.find(name)
        if service is not None:
            return service
        error = UnknownServiceError(name, self.suggest(name),
                                    self.where if self.found else None)
        if not self.services:
            error.hint = self.setup_hint()
        raise error

    @property
    def where(self) -> str:
        """The registry file as an absolute path ("heapbot.yaml" alone names no directory)."""
        return os.path.abspath(self.path) if self.path else str(DEFAULT_CONFIG)

    def setup_hint(self) -> str:
        """What to do when the registry is empty: which file (or search) it came from."""
        if not self.found:
            if self.path is None or Path(self.path) == DEFAULT_CONFIG:  # the default search
                looked = find_registry().describe()
                missing = f"There is no registry file: heapbot looked for {looked}."
            else:
                missing = f"There is no registry file at {self.where}."
            return (f"{missing} " + HOW_TO_ADD
                    + " (`make demo` leaves one in its checkout, found from any directory "
                    "inside it.)")
        return f"The registry {self.where} lists no services. " + HOW_TO_FILL


def _format_location(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _describe(error: ErrorDetails) -> str:
    loc = list(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _KeyError):
        return f"{_format_location([*loc[:-1], cause.key])}: {cause.message}"
    if isinstance(cause, ValueError):
        return f"{_format_location(loc)}: {cause}"
    message = error.get("msg", "invalid")
    if error.get("type") == "extra_forbidden":
        key = loc[-1] if loc else "?"
        close = difflib.get_close_matches(str(key), _keys_at(loc[:-1]), n=1, cutoff=0.7)
        if close:
            return f"{_format_location(loc)}: unknown key {key!r}; did you mean {close[0]!r}?"
        return f"{_format_location(loc)}: unknown key {key!r} (check its spelling in the README)"
    if error.get("type") == "missing":
        return f"{_format_location(loc)}: is required"
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
    return f"{_format_location(loc)}: {message}{shown}"


def _keys_at(where: list[Any]) -> list[str]:
    """The keys the registry takes at a location (``services.NAME`` → a service's keys)."""
    model: type[BaseModel] = _RegistryFile
    rest = list(where)
    if rest[:1] == ["services"]:
        model, rest = _ServiceEntry, rest[2:]
    elif rest[:1] == ["defaults"]:
        model, rest = _Defaults, rest[1:]
    if rest[:1] == ["source"]:
        model = _SourceEntry
    return list(model.model_fields)


def parse_registry(data: Any, path: Path) -> Registry:
    """Validate parsed YAML into a Registry; ConfigError names file, service and key.

    The file is named as given (HEAPBOT_CONFIG, the demo's, ./heapbot.yaml), so the user
    knows which one to fix; a misspelt key comes first, since it often explains the rest
    (`target:` for `targets:` also leaves `targets` missing).
    """
    name = str(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a map with `services:`.",
                          hint=HOW_TO_FILL)
    try:
        parsed = _RegistryFile.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
        problems = [_describe(e) for e in errors]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(
            f"{name}: {problems[0]}{more}",
            hint="Fix the registry file and restart heapbot." if not more else
            "Other problems: " + "; ".join(problems[1:4]),
        ) from None

    defaults = parsed.defaults
    services: dict[str, ServiceConfig] = {}
    seen: dict[str, str] = {}
    for service_name, entry in parsed.services.items():
        where = f"{name}: services.{service_name}"
        if not SERVICE_NAME.match(service_name):
            raise ConfigError(
                f"{where}: {service_name!r} is not a valid service name (lowercase letters, "
                "digits, '-', '_' and '.', up to 63 characters)."
            )
        for index, alias in enumerate([service_name, *entry.aliases]):
            key = alias.lower()
            if index and not SERVICE_NAME.match(key):
                raise ConfigError(f"{where}.aliases[{index - 1}]: {alias!r} is not a valid name.")
            if key in seen and seen[key] != service_name:
                raise ConfigError(
                    f"{where}: the name {alias!r} is already used by service `{seen[key]}`.",
                    hint="Names and aliases must be unique across services.",
                )
            seen[key] = service_name

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        services[service_name] = ServiceConfig(
            name=service_name,
            targets=tuple(entry.targets),
            channel=entry.channel,
            aliases=tuple(a for a in entry.aliases if a.lower() != service_name),
            auth_header_env=entry.auth_header_env,
            headers_env=dict(entry.headers_env),
            timeout_seconds=pick(entry.timeout_seconds, defaults.timeout_seconds),
            pprof_prefix=pick(entry.pprof_prefix, defaults.pprof_prefix).rstrip("/") or "",
            gc=pick(entry.gc, defaults.gc),
            gc_triggers=tuple(pick(entry.gc_triggers, defaults.gc_triggers)),
            allow_channels=tuple(entry.allow_channels),
            allow_usergroups=tuple(entry.allow_usergroups),
            cooldown_seconds=pick(entry.cooldown_seconds, defaults.cooldown_seconds),
            retention_count=pick(entry.retention_count, defaults.retention_count),
            retention_days=pick(entry.retention_days, defaults.retention_days),
            max_profile_bytes=pick(entry.max_profile_bytes, defaults.max_profile_bytes),
            concurrency=pick(entry.concurrency, defaults.concurrency),
            source=SourceConfig(dir=entry.source.dir, url=entry.source.url,
                                trim_prefix=tuple(entry.source.trim_prefix),
                                max_bytes=entry.source.max_bytes) if entry.source else None,
        )
    return Registry(services=services, path=path, found=True)


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate the registry; a missing file gives an empty registry (not an error)."""
    if path is None:  # as Settings finds it: HEAPBOT_CONFIG, else the nearest one upwards
        path = os.environ.get("HEAPBOT_CONFIG") or default_config_path()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Registry(services={}, path=file, found=False)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read ({exc.strerror}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}.") from None
    return parse_registry(data, file)
