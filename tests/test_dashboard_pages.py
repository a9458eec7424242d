"""The dashboard's shipped pages, read as files (no browser): which scripts each one loads."""

from __future__ import annotations

import re
from importlib import resources

STATIC = resources.files("pitstop.web") / "static"
PAGES = sorted(p.name for p in STATIC.iterdir() if p.name.endswith(".html"))


def scripts(name: str) -> list[str]:
    return re.findall(r"<script\b([^>]*)>", (STATIC / name).read_text())


def test_every_page_but_login_loads_the_chat_panel_after_common_js() -> None:
    assert "fleet.html" in PAGES and "login.html" in PAGES
    for name in PAGES:
        sources = [m.group(1) for a in scripts(name) if (m := re.search(r'src="([^"]+)"', a))]
        if name == "login.html":
            assert "/static/chat.js" not in sources
            continue
        assert sources[:2] == ["/static/common.js", "/static/chat.js"], name


def test_no_page_has_an_inline_script() -> None:
    for name in PAGES:
        for attributes in scripts(name):
            assert 'src="/static/' in attributes, f"{name}: an inline or foreign script"
