"""MkDocs hook: fvt's docstrings name objects the Sphinx way (:class:`fvt.Config`); the API reference shows
them as plain code instead of printing the role."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|mod|func|meth|attr|obj|exc|data):(?=<code>)")


def on_page_content(html, page, config, files):
    return ROLE.sub("", html)
