"""A segment's rules as indented lines of plain words: what the engine understood."""

from __future__ import annotations

from .spec import All, AnyOf, EmailRule, EventRule, FieldRule, Not, Op, SegmentRef, ValueRule


def describe(rule: object, depth: int = 0) -> list[str]:
    """The rule tree as indented lines, as the engine understood it."""
    pad = "  " * depth
    if isinstance(rule, (All, AnyOf)):
        lines = [f"{pad}{'all of' if isinstance(rule, All) else 'any of'}:"]
        for item in rule.items:
            lines += describe(item, depth + 1)
        return lines
    if isinstance(rule, Not):
        return [f"{pad}not:"] + describe(rule.item, depth + 1)
    if isinstance(rule, SegmentRef):
        return [f"{pad}in segment {rule.name}"]
    if isinstance(rule, FieldRule):
        return [f"{pad}{rule.field.name} {_ops(rule.ops)}"]
    if isinstance(rule, ValueRule):
        return [f"{pad}attributes.{'.'.join(rule.path)} (as {rule.type}) {_ops(rule.ops)}"]
    if isinstance(rule, EventRule):
        parts = [f"event {rule.type}"]
        if rule.count:
            parts.append(f"count {_ops(rule.count)}")
        if rule.sum_ops:
            parts.append(f"sum of {rule.sum_of} {_ops(rule.sum_ops)}")
        if rule.within:
            parts.append(f"within {rule.within}")
        if rule.since:
            parts.append(f"since {rule.since}")
        if rule.until:
            parts.append(f"until {rule.until}")
        for condition in rule.where:
            parts.append(f"where {'.'.join(condition.path)} {_ops(condition.ops)}")
        return [pad + ", ".join(parts)]
    if isinstance(rule, EmailRule):
        text = f"emails {rule.action}" + (f" (flow {rule.flow})" if rule.flow else " (any flow)")
        text += f", count of emails {_ops(rule.count)}" + (f", within {rule.within}" if rule.within else "")
        text += ", machine opens and bot clicks included" if rule.include_automated else ", people only"
        return [pad + text]
    return [f"{pad}{rule!r}"]


def _ops(ops: tuple[Op, ...]) -> str:
    def show(value: object) -> str:
        if isinstance(value, tuple):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return str(value)

    def one(op: Op) -> str:
        if op.name == "anniversary":
            days = op.value
            return "anniversary today" if days == 0 else f"anniversary within the next {days} days"
        return f"{op.name} {show(op.value)}"

    return " and ".join(one(op) for op in ops)
