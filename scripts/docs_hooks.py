"""MkDocs hook: screenshots that the browser tests have not written yet are shown as a note, not a broken image.

The pictures under docs/assets/screenshots/ are written by the browser tests (`FCLIP_DOC_SCREENSHOTS`),
so they show the app as it is. A page may reference one before it exists (a fresh clone, a build
before the tests ran): the image is then replaced by an inline note naming the file, and the build logs it
at INFO level. With FCLIP_REQUIRE_SCREENSHOTS=1 a missing screenshot is a warning instead, which
fails a strict build.
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.screenshots")
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]*assets/screenshots/[^)\s]+\.png)\)(\{[^}]*\})?")


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs_dir = Path(config["docs_dir"])
    here = posixpath.dirname(page.file.src_uri)

    def replace(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(here, m.group(2)))
        if (docs_dir / target).is_file():
            return m.group(0)
        how = log.warning if os.environ.get("FCLIP_REQUIRE_SCREENSHOTS") == "1" else log.info
        how("%s: screenshot %s not written yet (the browser tests write it)", page.file.src_uri, target)
        return (f"*(Screenshot `docs/{target}` not generated yet: the browser tests write it when run with "
                f"`FCLIP_DOC_SCREENSHOTS` set.)*")

    return IMAGE.sub(replace, markdown)
