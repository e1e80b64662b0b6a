"""Source lines for ``list`` (pprof -list): a local checkout or a URL per file, nothing else.

A profile names files as the build saw them (``/home/ci/payments/cache.go``, or
``github.com/acme/payments/cache.go`` with ``-trimpath``). A registry service's
``source:`` block says where to read them:

- ``dir``: a local checkout. ``trim_prefix`` entries are cut off the front of
  the profile's path first; otherwise each shorter suffix of the path is tried
  under ``dir`` (``deploy/demo/scenarios.go`` of ``/work/x/deploy/demo/...``),
  as ``go tool pprof -source_path`` does. Files outside ``dir`` are never read.
- ``url``: a template such as
  ``https://raw.githubusercontent.com/acme/payments/{version}/{path}``, where
  ``{path}`` is the profile's path with a ``trim_prefix`` cut off, ``{version}``
  the version of the latest deploy marker and ``{build_id}`` the binary's build
  id. Only the template's own scheme, host and port are fetched (no redirects
  elsewhere), each file at most ``max_bytes``.

Otherwise the reply says that the source is not configured and how to configure
it. Nothing here is stored; files are read per request.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from bot.registry import SOURCE_MAX_BYTES, SourceConfig
from bot.units import format_value

if TYPE_CHECKING:
    from bot.analysis.listing import ListFunction, ListReport

MAX_FILES = 20  # files read for one answer
MARGIN = 5  # lines shown after the last line with a value (pprof's -list)
FETCH_TIMEOUT_S = 5.0
NOT_CONFIGURED = (
    "Source lines are not shown: no source is configured for `{service}`. Add a `source:` "
    "block to its registry entry, `dir:` (a local checkout) or `url:` (e.g. "
    "https://raw.githubusercontent.com/ORG/REPO/{{version}}/{{path}}), with `trim_prefix:` "
    "for the build's path prefix (README: Source lines in list)."
)


@dataclass(slots=True)
class Sources:
    """The source text found for each profile file, and why some were not."""

    configured: bool
    texts: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def note(self, service: str | None = None) -> str:
        """One line for the reply when some source could not be shown ("" when all was)."""
        if not self.configured:
            if service is None:
                return ("Source lines are not shown: give --source-dir DIR (the checkout the "
                        "binary was built from).")
            return NOT_CONFIGURED.format(service=service)
        if self.problems:
            shown = "; ".join(self.problems[:3])
            more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
            return f"Some source lines are not shown: {shown}{more}."
        return ""


def _relative(file: str, trim_prefix: Sequence[str]) -> str | None:
    """The profile path with the first matching trim_prefix cut off (None if none matches)."""
    for prefix in trim_prefix:
        if prefix and file.startswith(prefix):
            return file[len(prefix):].lstrip("/")
    return None


def _safe_parts(path: str) -> tuple[str, ...] | None:
    parts = tuple(p for p in PurePosixPath(path).parts if p not in ("/", ""))
    if not parts or any(p in (".", "..") for p in parts):
        return None
    return parts


def _read_local(root: Path, file: str, config: SourceConfig) -> list[str] | str:
    """The lines of ``file`` under ``root``, or why not (a short reason)."""
    trimmed = _relative(file, config.trim_prefix)
    parts = _safe_parts(trimmed if trimmed is not None else file)
    if parts is None:
        return f"{file}: not a plain relative path"
    candidates = [parts] if trimmed is not None else [parts[i:] for i in range(len(parts))]
    for candidate in candidates:
        path = root.joinpath(*candidate)
        try:
            resolved = path.resolve()
            if not resolved.is_relative_to(root) or not resolved.is_file():
                continue
            if resolved.stat().st_size > config.max_bytes:
                return f"{candidate[-1]} is larger than {format_value(config.max_bytes, 'bytes')}"
            return resolved.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
    return f"{PurePosixPath(file).name} is not under {root}"


async def _fetch(client: Any, url: str, max_bytes: int) -> list[str] | str:
    """GET ``url`` (no redirects), at most ``max_bytes``; the lines, or why not."""
    import httpx

    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code} for {PurePosixPath(urlsplit(url).path).name}"
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    return (f"{PurePosixPath(urlsplit(url).path).name} is larger than "
                            f"{format_value(max_bytes, 'bytes')}")
    except httpx.HTTPError as exc:
        return f"{urlsplit(url).hostname}: {type(exc).__name__}"
    return body.decode("utf-8", errors="replace").splitlines()


def source_url(config: SourceConfig, file: str, *, version: str | None,
               build_id: str | None) -> str | None:
    """The URL of ``file`` from the template, or None when it cannot be built."""
    if not config.url:
        return None
    relative = _relative(file, config.trim_prefix)
    if relative is None and config.trim_prefix:
        return None
    parts = _safe_parts(relative if relative is not None else file)
    if parts is None:
        return None
    url = config.url.format(path=quote("/".join(parts), safe="/"),
                            version=quote(version or "", safe=""),
                            build_id=quote(build_id or "", safe=""))
    template, built = urlsplit(config.url), urlsplit(url)
    if (built.scheme, built.hostname, built.port) != (template.scheme, template.hostname,
                                                      template.port):
        return None  # never another host than the configured one
    return url


async def find_sources(config: SourceConfig | None, files: Iterable[str], *,
                       version: str | None = None, build_id: str | None = None,
                       registry_dir: Path | None = None) -> Sources:
    """Read the source of each file from ``config``'s checkout or URL template."""
    if config is None or not config.configured:
        return Sources(configured=False)
    found = Sources(configured=True)
    wanted = list(dict.fromkeys(f for f in files if f))[:MAX_FILES]
    if config.dir:
        root = Path(config.dir).expanduser()
        if not root.is_absolute() and registry_dir is not None:
            root = registry_dir / root
        root = root.resolve()
        if not root.is_dir():
            found.problems.append(f"source dir {root} does not exist")
            return found
        for file in wanted:
            result = await asyncio.to_thread(_read_local, root, file, config)
            if isinstance(result, str):
                found.problems.append(result)
            else:
                found.texts[file] = result
        return found
    assert config.url is not None
    needs = {name for _, name, _, _ in string.Formatter().parse(config.url) if name}
    if "version" in needs and not version:
        found.problems.append("no deploy is recorded, so {version} is unknown (`/heap deploy "
                              "SERVICE VERSION` records one)")
        return found
    if "build_id" in needs and not build_id:
        found.problems.append("the profile carries no build id for {build_id}")
        return found
    import httpx

    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False) as client:
        for file in wanted:
            url = source_url(config, file, version=version, build_id=build_id)
            if url is None:
                found.problems.append(f"{PurePosixPath(file).name}: its path does not start "
                                      "with a trim_prefix")
                continue
            result = await _fetch(client, url, config.max_bytes)
            if isinstance(result, str):
                found.problems.append(result)
            else:
                found.texts[file] = result
    return found


def _read_recorded(file: str, max_bytes: int) -> list[str] | str | None:
    """The lines at the absolute path the build recorded; None when it is not here."""
    path = Path(file)
    if not path.is_absolute():
        return None
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > max_bytes:
            return f"{path.name} is larger than {format_value(max_bytes, 'bytes')}"
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None


async def find_sources_here(files: Iterable[str], *,
                            max_bytes: int = SOURCE_MAX_BYTES) -> Sources:
    """File mode without --source-dir: read the files where the build says they are.

    What `go tool pprof -list` reads on its own: a profile of a binary built on this
    machine (the demo's, a local `go build`) names its source by absolute path. Only the
    CLI's file mode does this (the user reads their own files); service mode reads only
    a registry ``source:`` block. Nothing found: not configured, and the note says how.
    """
    found = Sources(configured=True)
    absent: list[str] = []
    for file in list(dict.fromkeys(f for f in files if f))[:MAX_FILES]:
        result = await asyncio.to_thread(_read_recorded, file, max_bytes)
        if result is None:
            absent.append(file)
        elif isinstance(result, str):
            found.problems.append(result)
        else:
            found.texts[file] = result
    if not found.texts and not found.problems:
        return Sources(configured=False)
    found.problems += [f"{f} is not on this machine (--source-dir DIR maps it)" for f in absent]
    return found


def start_lines(names: Sequence[str], starts: Any) -> dict[str, int]:
    """Function name → the line its declaration starts on (0 when the profile lacks it)."""
    out: dict[str, int] = {}
    for name, start in zip(names, list(starts), strict=False):
        if int(start) > 0:
            out.setdefault(name, int(start))
    return out


@dataclass(frozen=True, slots=True)
class SourceLine:
    line: int
    flat: int
    cum: int
    text: str


def source_window(lines: Sequence[Any], text: Sequence[str], start: int = 0) -> list[SourceLine]:
    """pprof's -list window: from the function's first line to MARGIN after its last value."""
    values = {x.line: x for x in lines}
    first, last = min(values), max(values)
    low = start if 0 < start <= first else max(1, first - MARGIN)
    high = min(len(text), last + MARGIN)
    return [SourceLine(n, values[n].flat if n in values else 0,
                       values[n].cum if n in values else 0, text[n - 1])
            for n in range(low, high + 1)]


def listing_text(report: ListReport, sources: Sources, starts: Mapping[str, int]) -> str:
    """``go tool pprof -list``'s text: values and source lines where the source was found."""
    def rows(f: ListFunction) -> list[tuple[int, int, int, str]] | None:
        text = sources.texts.get(f.file)
        if not (text and f.lines and max(x.line for x in f.lines) <= len(text)):
            return None
        return [(x.flat, x.cum, x.line, x.text)
                for x in source_window(f.lines, text, starts.get(f.function, 0))]

    return report.to_text(rows)
