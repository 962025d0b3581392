"""Figures in docs/ that the code can produce, regenerated from it so they never go stale.

A generated block in a Markdown page sits between two markers:

    <!-- generated: NAME -->
    ...
    <!-- /generated -->

`python -m camhost.docfigures --check` exits 1 naming every block that differs from what
the code produces now (tests/test_docs.py runs it); `--write` (`make docs`) rewrites them.
Bench tables are not generated here: their figures are timings, which `make bench` writes.
"""
import argparse
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
BLOCK = re.compile(r"(<!-- generated: ([a-z0-9-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)


def anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def toc(page_text):
    """The page's table of contents: its ## and ### headings, outside code fences."""
    items, fence = [], False
    for line in page_text.split("\n"):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"(#{2,3}) (.+)", line)
        if m:
            indent = "  " * (len(m.group(1)) - 2)
            items.append("%s- [%s](#%s)" % (indent, m.group(2), anchor(m.group(2))))
    return "\n".join(items)


def mpy_sizes(page_text):
    from camhost.image import mpy_table
    with tempfile.TemporaryDirectory(prefix="camhost-docs-") as out:
        return "```\n%s\n```" % mpy_table(out)[0]


GENERATORS = {"toc": toc, "mpy-sizes": mpy_sizes}


def render(page_text):
    """The page with every generated block recomputed; unknown names raise ValueError."""
    def one(m):
        name = m.group(2)
        if name not in GENERATORS:
            raise ValueError("unknown generated block %r (known: %s)"
                             % (name, ", ".join(sorted(GENERATORS))))
        return m.group(1) + GENERATORS[name](page_text).rstrip("\n") + "\n" + m.group(4)
    return BLOCK.sub(one, page_text)


def pages():
    names = sorted(n for n in os.listdir(DOCS) if n.endswith(".md"))
    return [os.path.join(DOCS, n) for n in names] + [os.path.join(ROOT, "README.md")]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m camhost.docfigures", description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    mode.add_argument("--write", action="store_true", help="rewrite stale blocks")
    args = ap.parse_args(argv)
    stale = []
    for path in pages():
        with open(path, encoding="utf-8") as f:
            old = f.read()
        new = render(old)
        if new != old:
            stale.append(os.path.relpath(path, ROOT))
            if args.write:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
    if stale and args.check:
        print("stale generated figures in: %s (run `make docs`)" % ", ".join(stale), file=sys.stderr)
        return 1
    for name in stale:
        print("updated %s" % name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
