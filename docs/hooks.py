"""MkDocs hooks for this site.

* ``on_files``: publish the committed figures (``figures/`` at the repository root) with the
  site: every PNG of ``figures/`` is added to the site's files as ``figures/...`` (read in place,
  nothing is copied into ``docs/``), so links and images resolve and ``mkdocs build --strict``
  checks them like any other file.
* ``on_page_markdown``: the pages link to the committed figures by their path in the repository
  (``../figures/x.png`` from ``docs/index.md``, ``../../figures/x.png`` from ``docs/experiments/``), so
  that they show on GitHub too; in the site those files are at ``figures/``, and each such link is
  rewritten to that place, relative to the page.
* ``on_page_content``: in a notebook page (mkdocs-jupyter renders it to HTML without MkDocs' link
  handling), turn links to other pages (``concepts.md#the-theorem``) into the site's URLs, as
  MkDocs does for Markdown pages; a link to a missing page is a warning (an error with ``--strict``).
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
#: A Markdown link or image to a relative path (``](../figures/x.png)``).
FIGURE_LINK = re.compile(r"(\]\()((?:\.\./)+figures/[^)\s]+)\)")
LINK = re.compile(r'href="(?![a-z]+:|#|/)([^"#]+\.(?:md|ipynb))(#[^"]*)?"')
log = logging.getLogger("mkdocs.hooks.notebook_links")


def on_files(files: Files, config) -> Files:
    for png in sorted((ROOT / "figures").rglob("*.png")):
        rel = png.relative_to(ROOT).as_posix()
        files.append(File(rel, src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    here = (Path(config["docs_dir"]) / page.file.src_uri).parent

    def site_path(m: re.Match) -> str:
        target = Path(posixpath.normpath((here / m.group(2)).as_posix()))
        if FIGURES not in target.parents:
            return m.group(0)
        rel = posixpath.relpath(target.relative_to(ROOT).as_posix(), posixpath.dirname(page.file.src_uri) or ".")
        return f"{m.group(1)}{rel})"

    return FIGURE_LINK.sub(site_path, markdown)


def on_page_content(html: str, page, config, files: Files) -> str:
    if not page.file.src_uri.endswith(".ipynb"):
        return html

    def fix(m: re.Match) -> str:
        target_uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m.group(1)))
        target = files.get_file_from_path(target_uri)
        if target is None:
            log.warning("%s links to %r, which is not a page of the site.", page.file.src_uri, m.group(1))
            return m.group(0)
        return f'href="{target.url_relative_to(page.file)}{m.group(2) or ""}"'

    return LINK.sub(fix, html)
