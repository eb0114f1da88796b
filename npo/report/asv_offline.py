"""Make ``asv publish`` output render with no network.

asv (0.6.6) writes an ``index.html`` that loads jQuery, flot and its plugins,
stupidtable, blueimp-md5 and bootstrap from CDNs; offline, that page stays
blank. :func:`make_offline` points every such ``<script src>`` and
``<link href>`` at a local copy, copied from ``npo/report/vendor/`` (files taken
from Debian packages, see ``vendor/LICENSES.md``) into ``<html_dir>/vendor/``.

A CDN URL with no vendored copy is an error (:class:`ValueError` naming it),
never skipped, so an asv upgrade that changes a URL cannot silently bring the
blank page back: add the new file to ``vendor/`` and to :data:`VENDOR`.

Importing this module has no side effects; the only module-level state is
the :data:`VENDOR` table.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["COMMITS_PAGE", "LICENSE_FILE", "VENDOR", "VENDOR_DIRNAME", "make_offline", "publish",
           "write_commits_page"]

#: The page asv's commit links point at (``show_commit_url`` in asv.conf.json is
#: ``"commits.html#"``): the project has no hosted repository to link to, so the
#: published site carries its own list of commits, one anchor per hash.
COMMITS_PAGE = "commits.html"

_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs"
_JSDELIVR = "https://cdn.jsdelivr.net/npm"

#: CDN URL (exactly as asv writes it) -> file name under ``npo/report/vendor/``.
VENDOR: dict[str, str] = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.min.js": "jquery.flot.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.time.min.js": "jquery.flot.time.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.selection.min.js": "jquery.flot.selection.min.js",
    f"{_CDNJS}/flot/0.8.3/jquery.flot.categories.min.js": "jquery.flot.categories.min.js",
    f"{_JSDELIVR}/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    f"{_CDNJS}/stupidtable/1.0.1/stupidtable.min.js": "stupidtable.js",
    f"{_CDNJS}/blueimp-md5/2.19.0/js/md5.min.js": "md5.js",
    f"{_JSDELIVR}/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap.min.js",
    f"{_JSDELIVR}/bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap.min.css",
}

#: Folder, inside asv's ``html_dir``, that receives the vendored files.
VENDOR_DIRNAME = "vendor"

#: Licence notes copied along with the vendored files.
LICENSE_FILE = "LICENSES.md"

# Attributes that only make sense for a CDN copy: an SRI hash would not match
# the Debian build of the same version, and ``crossorigin`` breaks file:// use.
_DROP_ATTRS = frozenset({"integrity", "crossorigin", "referrerpolicy"})

_TAG = re.compile(r"<(script|link)\b([^>]*)>", re.IGNORECASE)
_ATTR = re.compile(
    r"""(\s+)([^\s"'<>/=]+)(?:(\s*=\s*)("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
_REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


def _vendor_source(name: str):
    """Return the packaged vendored file ``name`` (a ``Traversable``)."""
    return resources.files("npo.report").joinpath("vendor", name)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _rewrite(text: str, prefix: str) -> tuple[str, list[str], list[str]]:
    """Point the remote ``<script src>``/``<link href>`` of one page at local copies.

    Parameters
    ----------
    text : str
        The page's HTML.
    prefix : str
        Relative URL of the vendor folder as seen from the page, ending in ``/``.

    Returns
    -------
    new_text : str
        The page with every known CDN URL replaced and, in those tags,
        ``integrity``/``crossorigin``/``referrerpolicy`` removed.
    replaced : list of str
        The CDN URLs replaced, in order of appearance.
    unknown : list of str
        Remote URLs with no vendored copy (their tags are left untouched).
    """
    replaced: list[str] = []
    unknown: list[str] = []

    def tag(m: re.Match) -> str:
        name, body = m.group(1), m.group(2)
        url_attr = "src" if name.lower() == "script" else "href"
        url = None
        for a in _ATTR.finditer(body):
            if a.group(2).lower() == url_attr and a.group(4) is not None:
                url = html.unescape(a.group(4).strip("\"'"))
        if url is None or not _REMOTE.match(url):
            return m.group(0)
        local = VENDOR.get(url.strip())
        if local is None:
            unknown.append(url.strip())
            return m.group(0)
        replaced.append(url.strip())

        def attr(a: re.Match) -> str:
            key = a.group(2).lower()
            if key in _DROP_ATTRS:
                return ""
            if key == url_attr:
                return f'{a.group(1)}{a.group(2)}="{prefix}{local}"'
            return a.group(0)

        return f"<{name}{_ATTR.sub(attr, body)}>"

    return _TAG.sub(tag, text), replaced, unknown


def _plan(html_dir: Path) -> list[tuple[Path, bytes, list[str]]]:
    """Work out every page's rewrite without writing anything.

    Raises
    ------
    ValueError
        If ``html_dir`` has no ``index.html``, a page refers to a remote URL
        with no vendored copy, or a vendored file is missing from the package.
    """
    if not (html_dir / "index.html").is_file():
        raise ValueError(f"no index.html in {html_dir}: run `asv publish` first "
                         "(or pass asv.conf.json's html_dir)")
    vendor_dir = html_dir / VENDOR_DIRNAME
    changes: list[tuple[Path, bytes, list[str]]] = []
    unknown: list[str] = []
    for page in sorted(html_dir.rglob("*.html")):
        if vendor_dir in page.parents or page.name.startswith("."):
            continue
        text = page.read_bytes().decode("utf-8")
        prefix = Path(os.path.relpath(vendor_dir, page.parent)).as_posix() + "/"
        new, replaced, missing = _rewrite(text, prefix)
        unknown += [f"{u} (in {page.relative_to(html_dir).as_posix()})" for u in missing]
        if replaced:
            changes.append((page, new.encode("utf-8"), replaced))
    if unknown:
        raise ValueError(
            "no vendored copy for " + ", ".join(unknown)
            + ": the page would stay blank offline; add the file to npo/report/vendor/ "
            "and its URL to VENDOR in npo/report/asv_offline.py")
    for name in [*VENDOR.values(), LICENSE_FILE]:
        if not _vendor_source(name).is_file():
            raise ValueError(f"vendored file {name} is missing from the installed npo.report "
                             "package (is vendor/* in its package-data?)")
    return changes


def _make_offline(html_dir) -> list[tuple[Path, list[str]]]:
    """Do :func:`make_offline`'s work; return ``(page, replaced URLs)`` per rewritten page."""
    html_dir = Path(html_dir)
    changes = _plan(html_dir)
    vendor_dir = html_dir / VENDOR_DIRNAME
    vendor_dir.mkdir(exist_ok=True)
    # The vendored files go in before any page points at them.
    for name in sorted({*VENDOR.values(), LICENSE_FILE}):
        _write_atomic(vendor_dir / name, _vendor_source(name).read_bytes())
    for page, data, _ in changes:
        _write_atomic(page, data)
    return [(page, replaced) for page, _, replaced in changes]


def make_offline(html_dir) -> list[str]:
    """Make the pages ``asv publish`` wrote load their libraries from local copies.

    Every ``<script src="https://...">`` and ``<link href="https://...">`` in
    each ``*.html`` under ``html_dir`` is pointed at a file in
    ``html_dir/vendor/`` (copied there from ``npo/report/vendor/``, together
    with ``LICENSES.md``), and its ``integrity``, ``crossorigin`` and
    ``referrerpolicy`` attributes are removed. Other tags (``<a href>`` links
    in the page, say) are left alone. Nothing is written unless every remote
    URL has a vendored copy; each file is written to a temporary name in its
    folder and renamed over the old one. Running it again is harmless: a page
    already rewritten has nothing left to replace.

    Parameters
    ----------
    html_dir : str or os.PathLike
        asv's ``html_dir`` (``.asv/html`` here), as written by ``asv publish``.

    Returns
    -------
    list of str
        The CDN URLs replaced, one entry per replaced tag, in page order
        (pages sorted by path); empty if nothing was left to replace.

    Raises
    ------
    ValueError
        If ``html_dir`` has no ``index.html``, or a page loads a remote URL
        that has no vendored copy (the message names each such URL and page).
    """
    return [url for _, replaced in _make_offline(html_dir) for url in replaced]


def publish(html_dir=".asv/html") -> int:
    """Run ``asv publish`` in the current directory, then :func:`make_offline`.

    asv's own output goes to the terminal; then one line per rewritten page is
    printed to stderr.

    Parameters
    ----------
    html_dir : str or os.PathLike, optional
        The ``html_dir`` of ``asv.conf.json`` (default ``.asv/html``).

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    ValueError
        With a one-line message if asv is not installed, there is no
        ``asv.conf.json`` in the current directory, ``asv publish`` fails, or
        :func:`make_offline` does.
    """
    if importlib.util.find_spec("asv") is None:
        raise ValueError("asv is not installed: pip install 'npo-bench[dev]'")
    if not Path("asv.conf.json").is_file():
        raise ValueError(f"no asv.conf.json in {Path.cwd()}: run publish from the repository root")
    proc = subprocess.run([sys.executable, "-m", "asv", "publish"], check=False)
    if proc.returncode != 0:
        raise ValueError(f"`asv publish` exited with code {proc.returncode} (its output is above)")
    changes = _make_offline(html_dir)
    page = write_commits_page(html_dir)
    print(f"{page}: commit list for asv's commit links", file=sys.stderr)
    vendor = Path(html_dir) / VENDOR_DIRNAME
    for page, replaced in changes:
        print(f"{page}: {len(replaced)} CDN reference(s) now load from {vendor}/",
              file=sys.stderr)
    if not changes:
        print(f"{html_dir}: no CDN references to rewrite", file=sys.stderr)
    return 0


def write_commits_page(html_dir, repo=".") -> Path:
    """Write ``html_dir/commits.html``: every commit (hash, date, subject, files), one anchor each.

    asv links a commit as ``show_commit_url + hash``; with ``"commits.html#"``
    the link lands on that commit's row here, offline.
    """
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%x1e%H%x1f%cI%x1f%s", "--name-only"],
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ValueError(f"git log failed in {repo!r}: {out.stderr.strip()}")
    rows = []
    for rec in out.stdout.split("\x1e")[1:]:
        head, _, files = rec.partition("\n")
        sha, date, subject = head.split("\x1f", 2)
        names = [f for f in files.split() if f]
        shown = ", ".join(html.escape(f) for f in names[:12]) + (" ..." if len(names) > 12 else "")
        rows.append(f'<tr id="{sha}"><td><code>{sha[:12]}</code></td><td>{html.escape(date)}</td>'
                    f"<td>{html.escape(subject)}</td><td>{shown}</td></tr>")
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>npo-bench commits</title>"
            "<style>body{font-family:sans-serif;margin:1em}td{vertical-align:top;padding:2px 8px}"
            "tr:target{background:#ffd}</style></head><body><h1>npo-bench commits</h1>"
            "<p><a href=\"index.html\">back to the benchmarks</a></p><table>"
            + "\n".join(rows) + "</table></body></html>\n")
    path = Path(html_dir) / COMMITS_PAGE
    _write_atomic(path, page.encode())
    return path
