"""Blocks a child template overrides, and the blocks its layouts define: a child's block that no
layout in its chain defines is never rendered (Jinja ignores it), so an email's body is lost."""

from __future__ import annotations

from collections.abc import Iterator

from jinja2 import nodes


def parent_name(tree: nodes.Template) -> str | None:
    """The layout a template extends at its top level, when named by a constant."""
    for node in tree.body:
        if isinstance(node, nodes.Extends):
            template = node.template
            if isinstance(template, nodes.Const) and isinstance(template.value, str):
                return template.value
            return None
    return None


def overriding_blocks(tree: nodes.Template) -> Iterator[nodes.Block]:
    """The blocks of a child template that are not inside another block: those must be blocks
    of a layout (a block inside one of them is a new block of the child, rendered with it)."""
    def visit(node: nodes.Node) -> Iterator[nodes.Block]:
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.Block):
                yield child
            else:
                yield from visit(child)
    return visit(tree)


def rendered_block_names(tree: nodes.Template) -> set[str]:
    """Block names a layout defines anywhere, or renders through `self.NAME()`."""
    return {block.name for block in tree.find_all(nodes.Block)} | self_references(tree)


def self_references(tree: nodes.Template) -> set[str]:
    """Block names a template renders through `self.NAME()`."""
    return {node.attr for node in tree.find_all(nodes.Getattr)
            if isinstance(node.node, nodes.Name) and node.node.name == "self"}
