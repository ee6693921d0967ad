"""The example program's templates for rendering tests: a copy with extra template files, a
renderer that signs links, and a sample member. Shared by the template and text-link tests."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

from loyalty_mail.config import load_settings
from loyalty_mail.rendering import Renderer
from loyalty_mail.signing import TokenSigner

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)
SECRET = "test-secret-0123456789abcdef"


def member(**overrides: object) -> dict[str, object]:
    """A gold member in Ho Chi Minh City, as the renderer receives one; `overrides` change fields."""
    base: dict[str, object] = dict(
        member_id="SV000123", email="lan@example.com", first_name="Lan", last_name="Nguyễn",
        locale="vi", timezone="Asia/Ho_Chi_Minh", joined_at=datetime(2024, 11, 22, 20, tzinfo=timezone.utc),
        joined_on=date(2024, 11, 23), birthday=None, points=8450, tier="gold",
        total_spend=Decimal("8450000"), purchase_count=12,
        last_purchase_at=datetime(2026, 8, 1, tzinfo=timezone.utc), nps_score=9, subscribed=True,
        attributes={})
    return {**base, **overrides}


def program_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of the example program plus (or overriding) the given template files."""
    project = tmp_path / "program"
    shutil.copytree(ROOT / "templates", project / "templates")
    shutil.copy(ROOT / "config.yaml", project / "config.yaml")
    for name, text in files.items():
        path = project / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return project


def renderer_for(project: Path) -> Renderer:
    """The renderer of the program in `project`, signing links with SECRET."""
    settings = load_settings(project, environ={"LOYALTY_MAIL_SECRET": SECRET})
    return Renderer.for_program(settings, signer=TokenSigner(SECRET))
