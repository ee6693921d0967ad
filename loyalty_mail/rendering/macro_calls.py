"""A macro's signature and what is wrong with one call of it: a required argument not given (Jinja
renders it as undefined, failing inside the macro's file), a keyword it has no parameter for, or
more positional arguments than it takes, or a `{% call %}` block around a macro that never calls
`caller()` (Jinja refuses it when it renders)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jinja2 import nodes

from .catalog import TEMPLATES_DIR


@dataclass(frozen=True)
class Signature:
    """What a `{% macro %}` accepts, and where it is written."""

    name: str
    args: tuple[str, ...]
    required: int                # the first `required` args have no default
    varargs: bool                # reads `varargs`: takes extra positional arguments
    kwargs: bool                 # reads `kwargs`: takes extra keyword arguments
    caller: bool                 # reads `caller`: takes the body of a `{% call %}` block
    file: str                    # Jinja name of the file defining it
    line: int

    @classmethod
    def of(cls, macro: nodes.Macro, file: str) -> Signature:
        read = {n.name for n in macro.find_all(nodes.Name) if n.ctx == "load"}
        args = tuple(a.name for a in macro.args)
        return cls(macro.name, args, len(args) - len(macro.defaults), "varargs" in read, "kwargs" in read,
                   "caller" in read or "caller" in args, file, macro.lineno)

    def __str__(self) -> str:
        shown = [a if i < self.required else f"{a}=..." for i, a in enumerate(self.args)]
        return f"{self.name}({', '.join(shown)})"

    def problems(self, call: nodes.Call, closest: Callable[[str, list[str]], list[str]],
                 call_block: bool = False) -> list[str]:
        """What is wrong with `call`, written as is or (`call_block`) as `{% call %}` (none about
        arguments when it passes `*args` or `**kwargs`: not known here); `closest` gives the
        parameter a wrong keyword most likely misspells."""
        where = f"(defined at {TEMPLATES_DIR}/{self.file}:{self.line}: {self})"
        found: list[str] = []
        if call_block and not self.caller and not self.kwargs:
            found.append(f"{self.name}() never calls caller(), so it cannot take the body of a {{% call %}} "
                         f"block: print it with {{{{ {self.name}(...) }}}}, or add {{{{ caller() }}}} to the "
                         f"macro {where}")
        if call.dyn_args is not None or call.dyn_kwargs is not None:
            return found
        given = set(self.args[:len(call.args)]) | ({"caller"} if call_block else set())
        if len(call.args) > len(self.args) and not self.varargs:
            found.append(f"{self.name}() takes {len(self.args)} argument(s), {len(call.args)} given {where}")
        for keyword in call.kwargs:
            if keyword.key in given:
                found.append(f"{self.name}() gets '{keyword.key}' twice {where}")
            elif keyword.key not in self.args and not self.kwargs and keyword.key != "caller":
                hint = closest(keyword.key, [a for a in self.args if a not in given])
                advice = f", did you mean {hint[0]}?" if hint else ""
                found.append(f"{self.name}() has no parameter '{keyword.key}'{advice} {where}")
            given.add(keyword.key)
        missing = [a for a in self.args[:self.required] if a not in given]
        if missing:
            found.append(f"{self.name}() needs {', '.join(repr(a) for a in missing)} {where}")
        return found
