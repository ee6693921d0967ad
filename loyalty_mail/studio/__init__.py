"""The studio: a local web application for writing emails and segments against real data.

    security.py   the token in the printed URL, then an HttpOnly SameSite=Strict cookie; CSRF
    watch.py      a cheap poll of the program files' modification times
    program.py    the program as its files are now (settings, templates, segments), never written
    git.py        a file as committed at git HEAD (`git show`)
    emails.py     a preview for a member or the sample member, with `check` and lint findings
    segments.py   counts, rules, SQL, a sample, and what an edit changes against HEAD
    app.py        the routes (server-rendered pages in templates/, live reload by server-sent events)
"""

from .app import create_app
from .program import Workspace
from .security import Access

__all__ = ["Access", "Workspace", "create_app"]
