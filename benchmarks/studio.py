"""Studio speed: what a save costs before the page shows it.

    python benchmarks/studio.py                     # 1,000,000 members (SQLite)
    python benchmarks/studio.py --members 100000    # a quicker run

Preview: after a template is saved the studio loads the program again (a new Renderer), compiles
the email and renders it for a member (`studio.emails.preview`, without and with the `check`
findings shown beside it). The naive path is `loyalty-mail preview` as a user runs it between two
saves: a new process that imports loyalty-mail, loads the program and renders.

Segment: after `segments/vip.yaml` is saved (gold and above -> silver and above) the studio counts
the segment and compares it with the version at git HEAD (`studio.segments.segment_view`: count,
sample, `git show`, members entering and leaving with examples). The naive path counts both
versions and diffs their member-id lists in Python. Members are generated straight into the tables
by benchmarks/segments.py. Times are the best of 5 runs (3 for the naive paths).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.segments import AT, load_sqlite  # noqa: E402
from loyalty_mail import db  # noqa: E402
from loyalty_mail.models import members_table  # noqa: E402
from loyalty_mail.runtime import Runtime  # noqa: E402
from loyalty_mail.scaffold import init_program  # noqa: E402
from loyalty_mail.segments import compile_rule  # noqa: E402
from loyalty_mail.studio import Workspace  # noqa: E402
from loyalty_mail.studio import emails, segments  # noqa: E402


def best(function, runs: int) -> float:
    fastest = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        function()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


def touch(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="keep the SQLite database in DIR and reuse it on the next run (same --members)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lm-studio-") as tmp:
        program = Path(tmp) / "program"
        init_program(program)
        for git in (["init", "-q"], ["add", "."], ["-c", "user.email=b@example.com", "-c", "user.name=b",
                                                   "commit", "-qm", "program"]):
            subprocess.run(["git", "-C", str(program), *git], check=True, capture_output=True)
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"segments-{args.members}.db"
        if not (args.keep and path.exists()):
            engine = db.create_db_engine(f"sqlite:///{path}")
            db.ensure_schema(engine)
            started = time.perf_counter()
            events = load_sqlite(engine, args.members)
            engine.dispose()
            print(f"seeded {args.members:,} members and {events:,} events in {time.perf_counter() - started:.0f} s")
        url = f"sqlite:///{path}"
        runtime = Runtime.load(program, database_url=url)
        workspace = Workspace(runtime, at=AT)
        engine = workspace.engine()
        with engine.connect() as connection:
            member_id = connection.execute(sa.select(members_table.c.member_id).limit(1)).scalar_one()

        template = program / "templates" / "welcome" / "en.html"
        source = template.read_text(encoding="utf-8")
        saves = iter(range(1_000_000))

        def save_and_preview(check: bool) -> None:
            touch(template, source.replace("Welcome,", f"Welcome {next(saves)},"))
            shown = emails.preview(workspace.state(), engine, "welcome", "en", member_id, AT, check=check)
            assert shown.rendered is not None and not shown.problems, shown.problems

        preview = best(lambda: save_and_preview(False), 5)
        checked = best(lambda: save_and_preview(True), 5)
        command = [sys.executable, "-m", "loyalty_mail", "--project", str(program), "--database", url, "preview",
                   "welcome", "--member", member_id, "--locale", "en"]
        naive = best(lambda: subprocess.run(command, check=True, capture_output=True), 3)
        touch(template, source)

        vip = program / "segments" / "vip.yaml"
        committed = vip.read_text(encoding="utf-8")
        edited = committed.replace("at_least: gold", "at_least: silver")

        def save_and_compare() -> segments.SegmentView:
            touch(vip, edited + f"# save {next(saves)}\n")
            view = segments.segment_view(workspace, workspace.state(), "vip")
            assert view.comparison is not None and view.comparison.change is not None, view.comparison
            return view

        view = save_and_compare()
        compare = best(save_and_compare, 5)
        state = workspace.state()
        catalog, _ = state.segments()
        ctx = workspace.segment_context(state.settings, catalog)  # type: ignore[arg-type]

        def naive_compare() -> tuple[int, int]:
            from loyalty_mail.segments.spec import SegmentParser
            from loyalty_mail.tiers import TierLadder
            from loyalty_mail.yaml_source import load_yaml_text

            old = SegmentParser(load_yaml_text(committed, "vip.yaml"),
                                TierLadder.from_settings(state.settings.tiers)).segment("vip")  # type: ignore[union-attr]
            new = catalog.get("vip")
            with engine.connect() as connection:
                before = {r[0] for r in connection.execute(
                    sa.select(members_table.c.member_id).where(compile_rule(old.rule, ctx)))}  # type: ignore[union-attr]
                after = {r[0] for r in connection.execute(
                    sa.select(members_table.c.member_id).where(compile_rule(new.rule, ctx)))}
            return len(after - before), len(before - after)

        entering, leaving = naive_compare()
        change = view.comparison.change  # type: ignore[union-attr]
        assert (entering, leaving) == (change.entering, change.leaving), ((entering, leaving), change)
        naive_segment = best(naive_compare, 3)
        touch(vip, committed)
        runtime.close()
        if args.keep is None and path.exists():
            path.unlink()
    print(f"\n{args.members:,} members, SQLite; best of 5 (naive: of 3)\n")
    print("| step | ours | naive | target |")
    print("| --- | ---: | ---: | --- |")
    print(f"| save -> preview re-rendered (reload, compile, render for a member) | {preview * 1000:.1f} ms | "
          f"{naive * 1000:.0f} ms (`loyalty-mail preview`) | <= 100 ms |")
    print(f"| save -> preview with its check findings | {checked * 1000:.1f} ms | - | - |")
    print(f"| save -> segment count + diff vs HEAD (+{change.entering:,} / -{change.leaving:,}, count "
          f"{view.count:,}) | {compare * 1000:.0f} ms | {naive_segment * 1000:.0f} ms (two id lists, "
          f"set difference) | <= 1 s |")


if __name__ == "__main__":
    shutil.which("git") or sys.exit("git is needed (the comparison reads HEAD)")
    main()
