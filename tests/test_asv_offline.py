"""npo.report.asv_offline: asv's pages made to load their libraries locally."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from npo.report import asv_offline
from npo.report.asv_offline import VENDOR, make_offline

asv_spec = importlib.util.find_spec("asv")
pytestmark = pytest.mark.skipif(asv_spec is None, reason="asv is not installed")

VENDOR_SRC = Path(asv_offline.__file__).parent / "vendor"
TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
URL = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def asv_www() -> Path:
    return Path(asv_spec.origin).parent / "www"


@pytest.fixture
def html_dir(tmp_path):
    """A fake html_dir: a copy of asv's own www/ (as asv publish copies it), plus a nested page."""
    d = tmp_path / "html"
    shutil.copytree(asv_www(), d)
    (d / "sub").mkdir()
    shutil.copy(asv_www() / "index.html", d / "sub" / "page.html")
    return d


def loaded_urls(page: Path) -> list[str]:
    """The src/href of every <script>/<link> tag of a page."""
    urls = []
    for tag in TAG.finditer(page.read_text()):
        m = URL.search(tag.group(0))
        if m:
            urls.append(m.group(1))
    return urls


def test_asv_page_has_cdn_urls_we_all_vendor():
    """The installed asv still loads exactly the CDN URLs VENDOR knows."""
    remote = {u for u in loaded_urls(asv_www() / "index.html") if "://" in u}
    assert remote, "asv's index.html no longer loads anything remote"
    assert remote <= set(VENDOR)


def test_make_offline_rewrites_every_cdn_reference(html_dir):
    replaced = make_offline(html_dir)
    remote_in_asv = [u for u in loaded_urls(asv_www() / "index.html") if "://" in u]
    assert replaced == remote_in_asv * 2  # index.html and sub/page.html
    for page in (html_dir / "index.html", html_dir / "sub" / "page.html"):
        text = page.read_text()
        urls = loaded_urls(page)
        assert not [u for u in urls if "://" in u or u.startswith("//")]
        assert "integrity=" not in text and "crossorigin=" not in text
        for u in urls:
            # regressions.xml is written by asv publish from results: not in www/
            if (page.name == "index.html" and u != "regressions.xml") or "vendor/" in u:
                assert (page.parent / u).is_file(), f"{page.name} loads missing {u}"
        # the rest of the page is untouched: the GitHub link, asv's own scripts
        assert 'href="https://github.com/airspeed-velocity/asv/"' in text
        assert 'src="asv.js"' in text
    assert 'src="../vendor/jquery-3.3.1.min.js"' in (html_dir / "sub" / "page.html").read_text()
    assert (html_dir / "error.html").read_bytes() == (asv_www() / "error.html").read_bytes()
    assert (html_dir / "vendor" / "LICENSES.md").is_file()


def test_vendored_files_are_copied_verbatim(html_dir):
    make_offline(html_dir)
    for name in set(VENDOR.values()):
        src, dst = VENDOR_SRC / name, html_dir / "vendor" / name
        assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(
            src.read_bytes()).digest()


def test_make_offline_is_idempotent(html_dir):
    assert make_offline(html_dir)
    first = (html_dir / "index.html").read_bytes()
    assert make_offline(html_dir) == []
    assert (html_dir / "index.html").read_bytes() == first


def test_unknown_cdn_url_is_an_error_and_nothing_is_written(html_dir):
    bad = "https://cdn.example.invalid/lib/9.9.9/newlib.min.js"
    page = html_dir / "index.html"
    before = page.read_text().replace(
        "</head>", f'<script src="{bad}" integrity="sha256-x"></script>\n</head>', 1)
    page.write_text(before)
    with pytest.raises(ValueError, match=re.escape(bad)) as exc:
        make_offline(html_dir)
    assert "index.html" in str(exc.value)
    assert page.read_text() == before
    assert not (html_dir / "vendor").exists()


def test_protocol_relative_and_link_tags(tmp_path):
    url = next(u for u in VENDOR if u.endswith(".css"))
    (tmp_path / "index.html").write_text(
        f"<html><head><LINK rel='stylesheet' href='{url}' crossorigin='anonymous' />"
        "<script src='//cdn.example.invalid/x.js'></script></head></html>")
    with pytest.raises(ValueError, match="//cdn.example.invalid/x.js"):
        make_offline(tmp_path)
    (tmp_path / "index.html").write_text(
        f"<html><head><LINK rel='stylesheet' href='{url}' crossorigin='anonymous' />"
        "</head></html>")
    assert make_offline(tmp_path) == [url]
    assert (tmp_path / "index.html").read_text() == (
        '<html><head><LINK rel=\'stylesheet\' href="vendor/bootstrap.min.css" /></head></html>')


def test_missing_index_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no index.html"):
        make_offline(tmp_path)


def test_no_temporary_files_left(html_dir):
    make_offline(html_dir)
    assert not [p for p in html_dir.rglob(".*") if p.is_file()]


def test_publish_without_asv_conf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no asv.conf.json"):
        asv_offline.publish(tmp_path / "html")


def test_publish_reports_asv_failure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "asv.conf.json").write_text("{}")

    class Done:
        returncode = 3

    monkeypatch.setattr(asv_offline.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(ValueError, match="exited with code 3"):
        asv_offline.publish(tmp_path / "html")


def test_publish_rewrites_after_asv(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "asv.conf.json").write_text("{}")
    calls = []
    real_run = asv_offline.subprocess.run

    def fake_run(cmd, **kw):
        if cmd[0] == "git":  # the commit list reads this repository's log
            return real_run([*cmd[:2], str(Path(__file__).resolve().parents[1]), *cmd[3:]], **kw)
        calls.append(cmd)
        (tmp_path / "html").mkdir()
        shutil.copy(asv_www() / "index.html", tmp_path / "html" / "index.html")

        class Done:
            returncode = 0

        return Done()

    monkeypatch.setattr(asv_offline.subprocess, "run", fake_run)
    assert asv_offline.publish("html") == 0
    assert calls and calls[0][1:] == ["-m", "asv", "publish"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "index.html" in err[1] and "commits.html" in err[0]
    assert (tmp_path / "html" / "commits.html").is_file()


def test_commits_page_anchors_every_commit(tmp_path):
    import subprocess

    from npo.report.asv_offline import write_commits_page

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    page = write_commits_page(tmp_path, repo=root).read_text()
    assert f'<tr id="{head}">' in page and "index.html" in page
