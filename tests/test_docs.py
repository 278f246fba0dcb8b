"""The front door: a short README whose every link, like every link of docs/ and bench/README.md, resolves
to a file inside the repository, and docs that say nothing dated about benchmarks outside bench/."""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code holds no links
    return LINK.findall(re.sub(r"`[^`\n]*`", "", text))


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # a scheme: http(s), mailto, … point outside
            broken.append(f"{target} (outside the repository)")
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert broken == []


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(ROOT / target.split("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert {page.resolve() for page in (ROOT / "docs").glob("*.md")} <= linked


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) ![pic](img/missing.png) [out](https://example.org) `[no](code)`\n")
    assert links(page) == ["page.md", "img/missing.png", "https://example.org"]
