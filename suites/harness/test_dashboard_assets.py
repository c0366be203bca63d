"""fusebench/dashboard_assets.py: third-party scripts fetched from a registry, checked against their pins,
cached, and linked from asv's page; without them the page keeps asv's CDN links.

A fake registry (a folder of npm-style tarballs, reached through a file:// address) stands in for npm, so
these tests need no network; the dashboard tests (test_dashboard.py) publish with the real registry.
"""

import hashlib
import importlib.metadata
import io
import json
import tarfile
from pathlib import Path

import pytest

from fusebench import dashboard, dashboard_assets
from fusebench.dashboard_assets import Asset, AssetsUnavailable

ROOT = Path(__file__).resolve().parents[2]
# the page `asv publish` writes (asv's installed files: `import asv` would find suites/asv here)
ASV_PAGE = Path(importlib.metadata.distribution("asv").locate_file("asv/www/index.html"))


def _registry(base: Path, package: str, version: str, files: dict[str, bytes]) -> str:
    """A registry holding one package's tarball with ``files`` (member path -> content); its address."""
    tarball = base / package / "-" / f"{package}-{version}.tgz"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, content in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    tarball.write_bytes(buffer.getvalue())
    return base.as_uri()


def _asset(member: str, content: bytes) -> Asset:
    return Asset(f"https://cdn.example/{member}", "tiny-plot", "1.2.3", member, hashlib.sha256(content).hexdigest())


SCRIPT, STYLE = b"window.tinyPlot = function () { return 42; };\n", b"body { color: #123; }\n"
PINNED = (_asset("package/plot.js", SCRIPT), _asset("package/plot.css", STYLE))


def test_pinned_files_are_fetched_checked_cached_and_then_served_from_the_cache(tmp_path):
    registry = _registry(tmp_path / "npm", "tiny-plot", "1.2.3", {"package/plot.js": SCRIPT,
                                                                  "package/plot.css": STYLE})
    copies = dashboard_assets.local_copies(PINNED, registry=registry, cache=tmp_path / "cache")
    assert [copies[a].read_bytes() for a in PINNED] == [SCRIPT, STYLE]
    assert all((tmp_path / "cache") in copies[a].parents for a in PINNED)
    # the registry gone: the cache alone answers
    again = dashboard_assets.local_copies(PINNED, registry=(tmp_path / "gone").as_uri(), cache=tmp_path / "cache")
    assert again == copies


def test_a_file_that_does_not_match_its_pin_is_refused_and_nothing_of_its_package_is_cached(tmp_path):
    registry = _registry(tmp_path / "npm", "tiny-plot", "1.2.3", {"package/plot.js": SCRIPT + b"steal();",
                                                                  "package/plot.css": STYLE})
    with pytest.raises(AssetsUnavailable, match=r"package/plot.js of .*tiny-plot-1.2.3.tgz does not match its pin"):
        dashboard_assets.local_copies(PINNED, registry=registry, cache=tmp_path / "cache")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_a_cached_copy_that_no_longer_matches_its_pin_is_fetched_again(tmp_path):
    registry = _registry(tmp_path / "npm", "tiny-plot", "1.2.3", {"package/plot.js": SCRIPT,
                                                                  "package/plot.css": STYLE})
    copies = dashboard_assets.local_copies(PINNED, registry=registry, cache=tmp_path / "cache")
    copies[PINNED[0]].write_bytes(b"corrupted")
    assert dashboard_assets.local_copies(PINNED, registry=registry, cache=tmp_path / "cache")[PINNED[0]] \
        .read_bytes() == SCRIPT


def test_an_unreachable_registry_is_named_in_the_error(tmp_path):
    with pytest.raises(AssetsUnavailable, match=r"cannot download .*/gone/tiny-plot/-/tiny-plot-1.2.3.tgz"):
        dashboard_assets.local_copies(PINNED, registry=(tmp_path / "gone").as_uri(), cache=tmp_path / "cache")


def _stand_ins(tmp_path: Path) -> dict:
    """A file per pinned asset (content irrelevant to the rewrite), as :func:`local_copies` returns them."""
    copies = {}
    for i, asset in enumerate(dashboard_assets.ASSETS):
        copies[asset] = tmp_path / "copies" / f"{i}"
        copies[asset].parent.mkdir(exist_ok=True)
        copies[asset].write_text(f"/* {asset.member} */")
    return copies


def test_every_cdn_link_of_asvs_own_page_points_at_a_local_copy(tmp_path):
    html_dir = tmp_path / "html"
    html_dir.mkdir()
    page = html_dir / "index.html"
    page.write_text(ASV_PAGE.read_text())
    copies = _stand_ins(tmp_path)
    # every pinned address is one asv writes (an asv upgrade that changed one would leave it on the CDN)
    assert dashboard_assets.localize(page, html_dir, copies) == len(dashboard_assets.ASSETS)
    head = page.read_text().split("<body")[0]
    assert "https://" not in head and "integrity=" not in head
    for asset, copy in copies.items():
        assert f'="{asset.vendor_path}"' in head and (html_dir / asset.vendor_path).read_text() == copy.read_text()
    assert head.count('onerror="js_load_failure()"') == ASV_PAGE.read_text().split("<body")[0].count(
        'onerror="js_load_failure()"')  # asv's own handler kept


def test_without_cache_or_registry_publish_keeps_asvs_cdn_links(tmp_path, monkeypatch, capsys):
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps({**json.loads((ROOT / "asv.conf.json").read_text()),
                                  "html_dir": str(tmp_path / "html"), "results_dir": str(tmp_path / "results")}))
    (tmp_path / "html").mkdir()
    monkeypatch.setattr(dashboard, "_asv", lambda *args, **kw: None)  # as if asv had published its page
    (tmp_path / "html" / "index.html").write_text(ASV_PAGE.read_text())
    monkeypatch.setenv("FUSEBENCH_CACHE", str(tmp_path / "empty-cache"))
    dashboard.publish(config, registry=(tmp_path / "offline").as_uri())
    assert (tmp_path / "html" / "index.html").read_text() == ASV_PAGE.read_text()
    assert not (tmp_path / "html" / "vendor").exists()
    assert "load their scripts from asv's CDN links (cannot download" in capsys.readouterr().err
