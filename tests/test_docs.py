"""The README and docs/: short README, links that resolve, figures that match the code."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from camhost import docfigures  # noqa: E402

LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def anchors(text):
    found, fence = set(), False
    for line in text.split("\n"):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"#{1,6} (.+)", line)
        if m:
            found.add(docfigures.anchor(m.group(1)))
    return found


def markdown_files():
    return ["README.md"] + ["docs/" + n for n in sorted(os.listdir(os.path.join(ROOT, "docs")))
                            if n.endswith(".md")]


def test_readme_is_one_screen_with_the_two_commands_first():
    lines = read("README.md").split("\n")
    assert len(lines) <= 150, "README.md has %d lines: move detail to docs/" % len(lines)
    head = "\n".join(lines[:40])
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("page", markdown_files())
def test_every_relative_link_and_anchor_resolves(page):
    text = read(page)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, frag = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(os.path.join(ROOT, dest)):
            broken.append(target)
        elif frag and dest.endswith(".md") and frag not in anchors(read(dest)):
            broken.append(target)
    assert not broken, "%s: links that go nowhere: %s" % (page, broken)


def test_every_docs_page_is_linked_from_the_readme():
    readme = read("README.md")
    missing = [p for p in markdown_files()[1:] if "(%s)" % p not in readme]
    assert not missing, "README.md does not link: %s" % missing


def test_generated_figures_match_the_code():
    """Fails when the agent changed and `make docs` was not run (sizes, tables of contents)."""
    proc = subprocess.run([sys.executable, "-m", "camhost.docfigures", "--check"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_a_stale_block_is_detected_and_rewritten():
    page = "# P\n\n<!-- generated: toc -->\n- [Old](#old)\n<!-- /generated -->\n\n## New one\n"
    fresh = docfigures.render(page)
    assert "- [New one](#new-one)" in fresh and "Old" not in fresh
    assert docfigures.render(fresh) == fresh
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        docfigures.render("<!-- generated: nope -->\n<!-- /generated -->")


def test_every_bench_section_is_explained_in_the_benchmarks_page():
    import run as bench_run
    page = read("docs/benchmarks.md")
    missing = [title for _, title in bench_run.SECTIONS.values() if "**%s**" % title not in page]
    assert not missing, "docs/benchmarks.md explains no %s" % missing
