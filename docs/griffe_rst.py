"""A griffe extension for the API reference: the library's docstrings are reStructuredText-flavoured
(``literals``, :func:`roles`, ``>>>`` doctests, ``Example::`` blocks); this turns those into the
Markdown that mkdocstrings renders, so the pages read well and ``mkdocs build --strict`` does not
mistake a doctest's ``['a', 'b']`` for a link. Only the rendered text changes, never the source.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):`~?([^`]+)`")
LITERAL = re.compile(r"``(.+?)``")


def _role(m: re.Match) -> str:
    target = m.group(1)
    shown = target.split(".")[-1] if m.group(0).split("`")[1].startswith("~") else target
    return f"`{shown}`"


def _fence_blocks(text: str) -> str:
    """Doctests (``>>>`` runs and their output) and ``::`` literal blocks as fenced code."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            block = []
            while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
                block.append(lines[i][len(indent):])
                i += 1
            out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            head = line.rstrip()[:-1]  # "Example::" -> "Example:"; a bare "::" line disappears
            base = len(line) - len(stripped)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            body_indent = len(lines[j]) - len(lines[j].lstrip()) if j < len(lines) else 0
            if j < len(lines) and body_indent > base:
                if head.strip() != ":":
                    out.append(head)
                out.append("")
                out.append(" " * base + "```python")
                while j < len(lines) and (not lines[j].strip() or
                                          len(lines[j]) - len(lines[j].lstrip()) >= body_indent):
                    out.append(" " * base + lines[j][body_indent:] if lines[j].strip() else "")
                    j += 1
                while out and not out[-1].strip():
                    out.pop()
                out += [" " * base + "```", ""]
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    text = _fence_blocks(text)
    parts = re.split(r"(```.*?```)", text, flags=re.S)  # leave code blocks alone
    for k in range(0, len(parts), 2):
        parts[k] = LITERAL.sub(r"`\1`", ROLE.sub(_role, parts[k]))
    return "".join(parts)


class RstToMarkdown(griffe.Extension):
    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
