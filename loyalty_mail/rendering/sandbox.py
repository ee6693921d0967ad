"""The Jinja environment every template runs in: Jinja's immutable sandbox, StrictUndefined,
our filters and the render limits, with quicker roads to what every email does many times.

This is the one module that extends Jinja beyond its public API (its code generator's
`visit_For`, `visit_Concat` and `_output_child_pre`); tests/test_sandbox.py checks each hook is
live on the Jinja installed, within the version range pyproject.toml allows.
"""

from __future__ import annotations

from typing import Any

import jinja2
import markupsafe
from markupsafe import _escape_inner as _escape_text  # markupsafe 3: str -> escaped str
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .context import Helper
from .formatting import FILTERS
from .limits import BOUNDED_FILTERS, RenderLimits, bounded_lipsum

_DICT_ATTRIBUTES = frozenset(dir(dict))


class _OutputCodeGenerator(CodeGenerator):
    """Jinja's code generator, except that `{{ ... }}` in autoescaped output goes through
    `TemplateSandbox.escape_output`, which returns a plain str, instead of `markupsafe.escape`,
    which wraps it in Markup (two more Python calls, ~30 times an email): output is only joined
    into the page, so it never needs to be Markup. Should Jinja rename this hook, the override
    goes unused and templates escape as Jinja does.

    And, for the render limits (limits.py): every `{% for %}` iterates through
    `environment.limits.iterate`, and every `~` is measured by `environment.limits.checked_text`."""

    _loop_iterables: set[int] | None = None  # ids of the `{% for %}` iterables being compiled

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not node.recursive:
            self._loop_iterables = (self._loop_iterables or set()) | {id(node.iter)}
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if self._loop_iterables and id(node) in self._loop_iterables:
            self._loop_iterables.discard(id(node))
            self.write("environment.limits.iterate(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Jinja writes a constant it folded (`{{ 1e400 }}`, `{{ "nan" | float }}`) with repr(),
        # which for an infinite float or NaN is a name the compiled module must define
        self.writeline("inf, nan = float('inf'), float('nan')")
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.limits.checked_text(")
        super().visit_Concat(node, frame)
        self.write(")")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape:
            return super()._output_child_pre(node, frame, finalize)
        self.write("environment.escape_output(")
        if finalize.src is not None:
            self.write(finalize.src)


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with quicker roads to what every email does many times, each
    giving what the sandbox itself would give (see benchmarks/README.md for what they save):

    - reading keys of the plain dicts the context is made of (`member.first_name`): the sandbox
      tries the attribute first and takes the key when that raises AttributeError, ~2 us a
      lookup; a dict has no attribute outside `dir(dict)`, so for any other name the key is
      what the sandbox would end up with, and `getattr` returns it directly;
    - calling a template's macros and our helpers (`call`); a macro given all its arguments by
      position runs its body directly, as `Macro.__call__` and `Macro._invoke` end up doing
      (Jinja 3.1: `_func`, `_argument_count`; pinned by tests/test_sandbox.py);
    - escaping output (`escape_output`, through `_OutputCodeGenerator`; markupsafe 3's
      `_escape_inner`, pinned by tests/test_sandbox.py)."""

    code_generator_class = _OutputCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    limits = RenderLimits()  # no limits until the renderer gives its own

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        self.limits.check_binop(operator, left, right)
        return self.binop_table[operator](left, right)

    @staticmethod
    def escape_output(value: Any) -> str:
        """What `markupsafe.escape` does for output (& < > " ' as entities; Markup as it is),
        a plain str escaped by markupsafe's own C function without making a Markup of it."""
        if value.__class__ is str:
            return _escape_text(value)
        return markupsafe.escape(value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """A template's own macro, or one of our helpers, is called as `Context.call` would call
        it (a macro with the evaluation context first; the compiler's bookkeeping arguments
        dropped), without the generic checks for what kind of callable it is: it is always that
        kind, and always safe. Every call reads the render's clock (a macro calling itself twice
        makes no loop)."""
        __self.limits.check_time()
        kind = type(__obj)
        if kind is jinja2.runtime.Macro or kind is Helper:
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            if kind is Helper:
                return __obj.function(*args, **kwargs)
            if not kwargs and len(args) == __obj._argument_count and not (
                    __obj.caller or __obj.catch_kwargs or __obj.catch_varargs):
                # every argument given by position: what Macro.__call__ ends with (`_invoke`)
                output = __obj._func(*args)
                return markupsafe.Markup(output) if __context.eval_ctx.autoescape else output
            return __obj(__context.eval_ctx, *args, **kwargs)
        args = __self.limits.check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def sandboxed_environment(loader: jinja2.BaseLoader | None, autoescape: bool,
                          limits: RenderLimits | None = None) -> TemplateSandbox:
    """Jinja's immutable sandbox, StrictUndefined, our filters, the render limits: how every
    template runs."""
    env = TemplateSandbox(loader=loader, autoescape=autoescape,
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    if limits is not None:
        env.limits = limits
    env.globals["lipsum"] = bounded_lipsum
    env.filters.update(BOUNDED_FILTERS)
    env.filters.update(FILTERS)
    return env
