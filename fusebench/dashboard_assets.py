"""The dashboard's third-party scripts: fetched from npm on first use, checked, cached outside the repository.

asv's ``index.html`` loads jQuery, flot (with four plugins), bootstrap, stupid-table and blueimp-md5 from CDNs.
So that a published site also works without internet access, :func:`local_copies` takes the same versions
from the npm registry once, checks every file against the SHA-256 pinned in :data:`ASSETS`, and keeps them in
a cache outside the repository (``$FUSEBENCH_CACHE/dashboard-js``, default ``~/.cache/fusebench``);
:func:`localize` then points the page's CDN links at those copies. When neither the cache nor the registry can
supply a file (offline on first use, or a package whose content no longer matches its pin),
:class:`AssetsUnavailable` says why and the page keeps asv's own CDN links with their integrity checks.

Only the CDN addresses asv writes are rewritten, matched whole: a link asv changes in a later release stays as
asv wrote it (it still works online) rather than being pointed at a copy of another version.
"""

from __future__ import annotations

import hashlib
import html.parser
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Asset", "ASSETS", "REGISTRY", "AssetsUnavailable", "cache_dir", "local_copies", "localize"]

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Asset:
    """One file asv's page loads: where asv links it, and the npm package file with the same content."""

    cdn_url: str  # exactly as asv's index.html writes it
    package: str
    version: str
    member: str  # the file's path inside the package tarball
    sha256: str

    @property
    def vendor_path(self) -> str:
        """Where the published site keeps the copy, relative to its html directory."""
        return f"vendor/{self.package}-{self.version}/{self.member.rsplit('/', 1)[-1]}"

    def tarball_url(self, registry: str) -> str:
        return f"{registry}/{self.package}/-/{self.package}-{self.version}.tgz"


_CDNJS, _JSDELIVR = "https://cdnjs.cloudflare.com/ajax/libs", "https://cdn.jsdelivr.net/npm"
# The versions asv 0.6's index.html loads. flot's plugins come unminified from npm (cdnjs serves a minified
# build of the same release); stupid-table 1.0.1 is not on npm, 1.1.3 is its nearest release there.
ASSETS: tuple[Asset, ...] = (
    Asset("https://code.jquery.com/jquery-3.3.1.min.js", "jquery", "3.3.1", "package/dist/jquery.min.js",
          "160a426ff2894252cd7cebbdd6d6b7da8fcd319c65b70468f10b6690c45d02ef"),
    Asset(f"{_CDNJS}/flot/0.8.3/jquery.flot.min.js", "jquery-flot", "0.8.3", "package/jquery.flot.js",
          "b7b931f273c38b1277b9c6c1f4e05c4ec09885a487bddaf3279e2d7e49a38e12"),
    Asset(f"{_CDNJS}/flot/0.8.3/jquery.flot.time.min.js", "jquery-flot", "0.8.3", "package/jquery.flot.time.js",
          "a582c832adc7138a6b05aaf61f16ebac274701f1be4afea77e739a1c34b9c41a"),
    Asset(f"{_CDNJS}/flot/0.8.3/jquery.flot.selection.min.js", "jquery-flot", "0.8.3",
          "package/jquery.flot.selection.js", "e6c85f6c1ebe4b4da29d8ae238c7c5060283f05f7ef054f6b91817d02c092918"),
    Asset(f"{_CDNJS}/flot/0.8.3/jquery.flot.categories.min.js", "jquery-flot", "0.8.3",
          "package/jquery.flot.categories.js", "6e81664b28ea795c734906f4aa15614640a75ac7fbd399a7fb9084040698351a"),
    Asset(f"{_JSDELIVR}/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js", "flot-orderbars", "1.0.0",
          "package/js/jquery.flot.orderBars.js", "39735b4f46f96ff4e082572401f47c55a2767b366fd1d1e821e44a8d830a12bf"),
    Asset(f"{_CDNJS}/stupidtable/1.0.1/stupidtable.min.js", "stupid-table-plugin", "1.1.3",
          "package/stupidtable.min.js", "4642380f28ebe9ed7cac251793b281ef8620c4386205d92788f9b12f5cceb4e0"),
    Asset(f"{_CDNJS}/blueimp-md5/2.19.0/js/md5.min.js", "blueimp-md5", "2.19.0", "package/js/md5.min.js",
          "64d7ded388c562e4bde9e58ce205e5fa01b9734fcd434d496eb7b4fbfe9b927d"),
    Asset(f"{_JSDELIVR}/bootstrap@3.1.1/dist/js/bootstrap.min.js", "bootstrap", "3.1.1",
          "package/dist/js/bootstrap.min.js", "898d05a17f2cfc5120ddcdba47a885c378c0b466f30f0700e502757e24b403a1"),
    Asset(f"{_JSDELIVR}/bootstrap@3.1.1/dist/css/bootstrap.min.css", "bootstrap", "3.1.1",
          "package/dist/css/bootstrap.min.css", "e9503448692b738dd260fbd7f7cabf2e11f09b600fa97e6eb3a56eba5b1a7e9b"),
)


class AssetsUnavailable(RuntimeError):
    """Neither the cache nor the registry could supply a pinned file; the message says which and why."""


def cache_dir() -> Path:
    """``$FUSEBENCH_CACHE/dashboard-js``, else ``$XDG_CACHE_HOME/fusebench/dashboard-js`` (``~/.cache``)."""
    root = os.environ.get("FUSEBENCH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "fusebench"
    return Path(root) / "dashboard-js"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cached(asset: Asset, cache: Path) -> Path:
    return cache / f"{asset.package}-{asset.version}" / asset.member.rsplit("/", 1)[-1]


def _fetch_package(package: list[Asset], registry: str, cache: Path, timeout: float) -> None:
    """Download one package's tarball and cache the pinned files from it, each only if its checksum matches."""
    url = package[0].tarball_url(registry)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (OSError, ValueError) as error:  # URLError is an OSError; a malformed registry address a ValueError
        raise AssetsUnavailable(f"cannot download {url}: {error}") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            contents = {a: tar.extractfile(a.member) for a in package}
            contents = {a: f.read() for a, f in contents.items() if f is not None}
    except (tarfile.TarError, KeyError, OSError) as error:
        raise AssetsUnavailable(f"{url} is not the expected package tarball: {error}") from None
    for asset in package:
        content = contents.get(asset)
        if content is None or _sha256(content) != asset.sha256:
            found = "missing" if content is None else f"sha256 {_sha256(content)}"
            raise AssetsUnavailable(f"{asset.member} of {url} does not match its pin (expected sha256 "
                                    f"{asset.sha256}, {found}); nothing of {asset.package} was cached")
    for asset in package:  # written only once every file of the package checked out
        target = _cached(asset, cache)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:  # atomic: parallel publishes
            out.write(contents[asset])
        os.replace(out.name, target)


def local_copies(assets=ASSETS, *, registry: str = REGISTRY, cache: Path | None = None,
                 timeout: float = 30.0) -> dict[Asset, Path]:
    """Every asset's checked copy in the cache, fetching from ``registry`` what is missing or does not match
    its pin. Raises :class:`AssetsUnavailable` when any file cannot be had."""
    cache = cache_dir() if cache is None else Path(cache)
    valid = lambda a: _cached(a, cache).is_file() and _sha256(_cached(a, cache).read_bytes()) == a.sha256
    packages: dict[tuple[str, str], list[Asset]] = {}
    for asset in assets:
        if not valid(asset):
            packages.setdefault((asset.package, asset.version), []).append(asset)
    for package in packages.values():
        _fetch_package(package, registry, cache, timeout)
    return {asset: _cached(asset, cache) for asset in assets}


class _LinkFinder(html.parser.HTMLParser):
    """The exact text of every <script src> and <link href> start tag whose address is a pinned CDN link."""

    def __init__(self, by_url: dict[str, Asset]):
        super().__init__(convert_charrefs=True)
        self.by_url, self.found = by_url, []  # (tag text, tag name, its attributes, asset)

    def handle_starttag(self, tag, attrs):
        url = dict(attrs).get({"script": "src", "link": "href"}.get(tag, ""))
        if url in self.by_url:
            self.found.append((self.get_starttag_text(), tag, attrs, self.by_url[url]))


def _tag(name: str, attrs, asset: Asset) -> str:
    # The copy was checked against its pin; the CDN's integrity attribute names the CDN's (minified) build
    kept = [(k, asset.vendor_path if k in ("src", "href") else v) for k, v in attrs
            if k not in ("integrity", "crossorigin", "referrerpolicy")]
    text = " ".join(k if v is None else f'{k}="{html.escape(v)}"' for k, v in kept)
    return f"<{name} {text}>"


def localize(page: Path, html_dir: Path, copies: dict[Asset, Path]) -> int:
    """Copy ``copies`` under ``html_dir/vendor`` and point the page's pinned CDN links at them; returns the
    number of links rewritten."""
    finder = _LinkFinder({a.cdn_url: a for a in copies})
    text = page.read_text()
    finder.feed(text)
    for original, tag, attrs, asset in finder.found:
        target = html_dir / asset.vendor_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copies[asset], target)
        text = text.replace(original, _tag(tag, attrs, asset))
    page.write_text(text)
    return len(finder.found)
