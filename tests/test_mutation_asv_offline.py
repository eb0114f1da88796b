"""Mutation-testing tests for npo.report.asv_offline: the rewrite of one page, exactly; the
plan's refusals; atomic writes and their modes; the commits page of a throwaway repository."""

import os
import subprocess

import pytest

from npo.report import asv_offline as ao

JQ = "https://code.jquery.com/jquery-3.3.1.min.js"
CSS = "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css"


def test_constants():
    assert (ao.VENDOR_DIRNAME, ao.LICENSE_FILE, ao.COMMITS_PAGE) == ("vendor", "LICENSES.md",
                                                                      "commits.html")
    assert ao._DROP_ATTRS == {"integrity", "crossorigin", "referrerpolicy"}
    assert len(ao.VENDOR) == 10 and ao.VENDOR[JQ] == "jquery-3.3.1.min.js"
    assert ao.VENDOR[CSS] == "bootstrap.min.css"
    assert ao.VENDOR["https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js"] == \
        "jquery.flot.min.js"
    assert ao.VENDOR["https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars"
                     ".js"] == "jquery.flot.orderBars.js"
    for name in [*ao.VENDOR.values(), ao.LICENSE_FILE]:
        assert ao._vendor_source(name).is_file(), name


def test_rewrite_one_page_exactly():
    page = (f'<head><script src="{JQ}" integrity="sha-1" crossorigin="anonymous" defer>'
            f"</script>\n<LINK Rel=stylesheet HREF='{CSS}' referrerpolicy=no-referrer>"
            '<script src="asv.js"></script><script>inline()</script>'
            '<link href="//fonts.example.invalid/x.css">'
            '<a href="https://github.com/x">x</a>'
            f'<script src=" {JQ} "></script></head>')
    new, replaced, unknown = ao._rewrite(page, "../vendor/")
    assert replaced == [JQ, CSS, JQ]
    assert unknown == ["//fonts.example.invalid/x.css"]
    assert new == ('<head><script src="../vendor/jquery-3.3.1.min.js" defer></script>\n'
                   '<LINK Rel=stylesheet HREF="../vendor/bootstrap.min.css">'
                   '<script src="asv.js"></script><script>inline()</script>'
                   '<link href="//fonts.example.invalid/x.css">'
                   '<a href="https://github.com/x">x</a>'
                   '<script src="../vendor/jquery-3.3.1.min.js"></script></head>')
    same, r2, u2 = ao._rewrite('<script src="https://x.invalid/a.js" async>', "v/")
    assert same == '<script src="https://x.invalid/a.js" async>' and r2 == [] and u2 == [
        "https://x.invalid/a.js"]
    amp, r3, _ = ao._rewrite(f'<script src="{JQ.replace("code", "code")}&#x2F;">', "v/")
    assert r3 == [] and amp.startswith("<script")
    esc, r4, _ = ao._rewrite('<script src="https:&#x2F;&#x2F;code.jquery.com/jquery-3.3.1.min.js">',
                             "v/")
    assert r4 == [JQ] and esc == '<script src="v/jquery-3.3.1.min.js">'
    none, r5, u5 = ao._rewrite("<script src></script><link rel=x>", "v/")
    assert none == "<script src></script><link rel=x>" and r5 == u5 == []
    data, r6, u6 = ao._rewrite('<script src="data:text/js,1">', "v/")
    assert r6 == u6 == []
    assert ao._REMOTE.match("HTTPS://a") and ao._REMOTE.match("  //a")
    assert not ao._REMOTE.match("a//b") and ao._REMOTE.match("git+ssh://h")


def test_plan_and_make_offline(tmp_path):
    with pytest.raises(ValueError) as e:
        ao._plan(tmp_path)
    assert str(e.value) == (f"no index.html in {tmp_path}: run `asv publish` first (or pass "
                            "asv.conf.json's html_dir)")
    (tmp_path / "index.html").write_text(f'<script src="{JQ}"></script>')
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "sub" / "deep" / "p.html").write_text(f"<link href='{CSS}'>")
    (tmp_path / "plain.html").write_text("<p>no scripts</p>")
    (tmp_path / ".hidden.html").write_text('<script src="https://bad.invalid/x.js">')
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "old.html").write_text('<script src="https://bad.invalid/y.js">')
    plan = ao._plan(tmp_path)
    assert [(p.relative_to(tmp_path).as_posix(), d, r) for p, d, r in plan] == [
        ("index.html", b'<script src="vendor/jquery-3.3.1.min.js"></script>', [JQ]),
        ("sub/deep/p.html", b'<link href="../../vendor/bootstrap.min.css">', [CSS])]
    os.chmod(tmp_path / "index.html", 0o640)
    assert ao.make_offline(str(tmp_path)) == [JQ, CSS]
    assert (tmp_path / "index.html").stat().st_mode & 0o777 == 0o640
    for name in [*ao.VENDOR.values(), "LICENSES.md"]:
        assert (tmp_path / "vendor" / name).read_bytes() == ao._vendor_source(name).read_bytes()
    assert (tmp_path / "plain.html").read_text() == "<p>no scripts</p>"
    (tmp_path / "x.html").write_text('<script src="https://a.invalid/1.js">'
                                     '<script src="https://a.invalid/2.js">')
    (tmp_path / "sub" / "y.html").write_text('<script src="https://a.invalid/3.js">')
    with pytest.raises(ValueError) as e:
        ao._plan(tmp_path)
    assert str(e.value) == (
        "no vendored copy for https://a.invalid/3.js (in sub/y.html), https://a.invalid/1.js "
        "(in x.html), https://a.invalid/2.js (in x.html): the page would stay blank offline; add "
        "the file to npo/report/vendor/ and its URL to VENDOR in npo/report/asv_offline.py")


def test_plan_refuses_a_missing_vendored_file(tmp_path, monkeypatch):
    (tmp_path / "index.html").write_text("<p></p>")
    real = ao._vendor_source
    monkeypatch.setattr(ao, "_vendor_source",
                        lambda name: real(name + ".gone") if name == "md5.js" else real(name))
    with pytest.raises(ValueError) as e:
        ao._plan(tmp_path)
    assert str(e.value) == ("vendored file md5.js is missing from the installed npo.report "
                            "package (is vendor/* in its package-data?)")
    monkeypatch.setattr(ao, "_vendor_source",
                        lambda name: real(name + ".gone") if name == "LICENSES.md" else real(name))
    with pytest.raises(ValueError, match="vendored file LICENSES.md is missing"):
        ao._plan(tmp_path)


def test_write_atomic(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    umask = os.umask(0)
    os.umask(umask)
    ao._write_atomic(p, b"one")
    assert p.read_bytes() == b"one" and p.stat().st_mode & 0o777 == 0o644
    os.chmod(p, 0o600)
    ao._write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and p.stat().st_mode & 0o777 == 0o600
    assert sorted(q.name for q in tmp_path.iterdir()) == ["f.txt"]

    def fail(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(ao.os, "replace", fail)
    with pytest.raises(OSError, match="replace failed"):
        ao._write_atomic(p, b"three")
    assert p.read_bytes() == b"two" and sorted(q.name for q in tmp_path.iterdir()) == ["f.txt"]


def _repo(tmp_path):
    g = ["git", "-C", str(tmp_path)]
    subprocess.run(g + ["init", "-q"], check=True)
    env = {**os.environ, "GIT_COMMITTER_DATE": "2024-05-06T07:08:09+00:00",
           "GIT_AUTHOR_DATE": "2024-05-06T07:08:09+00:00"}
    shas = []
    for k, files in enumerate((["a.py"], [f"f{i}.txt" for i in range(14)], ["<b>&.py"])):
        for f in files:
            (tmp_path / f).write_text(str(k))
        subprocess.run(g + ["add", "-A"], check=True)
        subprocess.run(g + ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m",
                            f"subject {k} <&>"], check=True, env=env)
        shas.append(subprocess.run(g + ["rev-parse", "HEAD"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    return shas


def test_commits_page(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shas = _repo(repo)
    html = tmp_path / "html"
    html.mkdir()
    page = ao.write_commits_page(html, repo=repo)
    assert page == html / "commits.html"
    text = page.read_text()
    assert text.startswith(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>npo-bench commits</title>'
        "<style>body{font-family:sans-serif;margin:1em}td{vertical-align:top;padding:2px 8px}"
        "tr:target{background:#ffd}</style></head><body><h1>npo-bench commits</h1>"
        '<p><a href="index.html">back to the benchmarks</a></p><table>')
    assert text.endswith("</table></body></html>\n")
    rows = text.split("<table>")[1].split("</table>")[0].split("\n")
    date = "2024-05-06T07:08:09+00:00"
    many = ", ".join(f"f{i}.txt" for i in sorted(range(14), key=str)[:12])
    assert rows == [
        f'<tr id="{shas[2]}"><td><code>{shas[2][:12]}</code></td><td>{date}</td>'
        "<td>subject 2 &lt;&amp;&gt;</td><td>&lt;b&gt;&amp;.py</td></tr>",
        f'<tr id="{shas[1]}"><td><code>{shas[1][:12]}</code></td><td>{date}</td>'
        f"<td>subject 1 &lt;&amp;&gt;</td><td>{many} ...</td></tr>",
        f'<tr id="{shas[0]}"><td><code>{shas[0][:12]}</code></td><td>{date}</td>'
        "<td>subject 0 &lt;&amp;&gt;</td><td>a.py</td></tr>"]
    with pytest.raises(ValueError) as e:
        ao.write_commits_page(html, repo=tmp_path / "not-a-repo")
    assert str(e.value).startswith(f"git log failed in {tmp_path / 'not-a-repo'!r}: ")


def test_publish_messages(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "asv" else real(n, *a))
    with pytest.raises(ValueError) as e:
        ao.publish()
    assert str(e.value) == "asv is not installed: pip install 'npo-bench[dev]'"
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as e:
        ao.publish()
    assert str(e.value) == f"no asv.conf.json in {tmp_path}: run publish from the repository root"
    (tmp_path / "asv.conf.json").write_text("{}")
    repo_shas = _repo(tmp_path)
    seen = []
    real_run = subprocess.run

    def fake_run(cmd, **kw):
        if cmd[0] == "git":
            return real_run(cmd, **kw)
        seen.append((cmd, kw))
        if not (tmp_path / "site").exists():
            (tmp_path / "site").mkdir()
            (tmp_path / "site" / "index.html").write_text("<p>nothing remote</p>")

        class Done:
            returncode = 0

        return Done()

    monkeypatch.setattr(ao.subprocess, "run", fake_run)
    assert ao.publish("site") == 0
    import sys

    assert seen == [([sys.executable, "-m", "asv", "publish"], {"check": False})]
    err = capsys.readouterr().err
    assert err == ("site/commits.html: commit list for asv's commit links\n"
                   "site: no CDN references to rewrite\n")
    assert repo_shas[0] in (tmp_path / "site" / "commits.html").read_text()
    (tmp_path / "site" / "index.html").write_text(f'<script src="{JQ}"></script>')
    assert ao.publish("site") == 0
    assert capsys.readouterr().err == (
        "site/commits.html: commit list for asv's commit links\n"
        "site/index.html: 1 CDN reference(s) now load from site/vendor/\n")


def test_write_atomic_stages_a_hidden_temporary_beside_the_target(tmp_path, monkeypatch):
    seen = []
    real = ao.tempfile.mkstemp

    def spy(**kw):
        seen.append(kw)
        return real(**kw)

    monkeypatch.setattr(ao.tempfile, "mkstemp", spy)
    ao._write_atomic(tmp_path / "page.html", b"x")
    assert seen == [{"prefix": ".page.html.", "suffix": ".tmp", "dir": tmp_path}]


def test_rewrite_keeps_the_url_characters_inside_the_quotes():
    _, replaced, unknown = ao._rewrite('<script src="https://cdn.invalid/libX"></script>', "v/")
    assert replaced == [] and unknown == ["https://cdn.invalid/libX"]


def test_commits_page_abbreviates_more_than_twelve_files(tmp_path):
    import inspect

    repo = tmp_path / "repo"
    repo.mkdir()
    g = ["git", "-C", str(repo)]
    subprocess.run(g + ["init", "-q"], check=True)
    for k, count in enumerate((12, 13)):
        for i in range(count):
            (repo / f"c{k}_{i:02d}.txt").write_text("x")
        subprocess.run(g + ["add", "-A"], check=True)
        subprocess.run(g + ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m",
                            f"c{k}"], check=True)
    html = tmp_path / "html"
    html.mkdir()
    rows = ao.write_commits_page(html, repo=repo).read_text().split("<table>")[1].split("\n")
    assert rows[0].endswith(" ...</td></tr>") and "c1_11.txt ..." in rows[0]
    assert rows[1].split("</table>")[0].endswith("c0_11.txt</td></tr>")
    assert inspect.signature(ao.publish).parameters["html_dir"].default == ".asv/html"
