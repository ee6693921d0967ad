"""Rendering: a template and a member in, a complete email message out (loyalty_mail.message).

    catalog.py     the emails on disk (a folder per email, a file per locale, front matter)
    flatten.py     layouts, includes and macro imports resolved in the source
    inlining.py    premailer once per template, Jinja protected; fallback detection
    cascade.py     the rules loops change, applied per email as premailer would
    links.py       trackable links, found with HTML parsers (conditional comments included)
    text.py        HTML -> readable plain text
    formatting.py  Babel filters: money, number, points, date, datetime, localtime
    context.py     what every template sees
    renderer.py    compile once, render per member, sign links (loyalty_mail.signing)
    checks.py      `check` for templates; dom.py compares two documents
"""

from .catalog import TEMPLATES_DIR, Catalog, Variant, load_catalog
from ..message import Address, RenderedEmail
from .renderer import Fallback, Renderer

__all__ = ["TEMPLATES_DIR", "Address", "Catalog", "Fallback", "RenderedEmail", "Renderer", "Variant",
           "load_catalog"]
