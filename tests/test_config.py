"""config.yaml: defaults, precedence, env references, and errors that point at file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty_mail.config import load_settings
from loyalty_mail.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _in_program_dir(tmp_path, monkeypatch):
    """Errors name files relative to the working directory, as the user typed them."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def problems(tmp_path: Path, text: str, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=environ or {})
    return [str(p) for p in caught.value.problems]


def test_the_example_program_config_is_valid():
    settings = load_settings(REPO, environ={})
    assert settings.program.currency == "VND"
    assert settings.program.locales == ("vi", "en")
    assert [t.name for t in settings.tiers.levels] == ["member", "silver", "gold", "platinum"]
    assert settings.database.url == "sqlite:///loyalty_mail.db"


def test_defaults_for_an_empty_file(tmp_path):
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.database.url == "sqlite:///loyalty_mail.db"
    assert settings.program.default_timezone == "UTC"
    assert [t.name for t in settings.tiers.levels] == ["member"]


def test_every_problem_is_reported_with_line_column_and_what_is_allowed(tmp_path):
    found = problems(tmp_path, """\
program:
  currency: DONG
  colour: red
  default_timezone: Asia/Saigon_City
  default_locale: klingon
tiers:
  basis: visits
  levels:
    - {name: member, threshold: 0}
    - {name: gold, threshold: lots}
""")
    assert found == [
        "config.yaml:2:13: program.currency: 'DONG' is not an ISO 4217 currency code (e.g. VND, USD, EUR)",
        "config.yaml:3:3: unknown key 'colour' in program (allowed: name, currency, default_locale, "
        "locales, default_timezone, points_per_currency_unit, points, sender_name, sender_email, postal_address, "
        "double_opt_in)",
        "config.yaml:4:21: program.default_timezone: unknown time zone 'Asia/Saigon_City' "
        "(an IANA name such as Asia/Ho_Chi_Minh)",
        "config.yaml:5:19: program.default_locale: unknown locale 'klingon' (e.g. en, vi, en_US, vi_VN)",
        "config.yaml:7:10: tiers.basis: Input should be 'points' or 'spend' (found 'visits')",
        "config.yaml:10:31: tiers.levels[1].threshold: Input should be a valid decimal (found 'lots')",
    ]


def test_a_section_of_the_wrong_kind_lists_its_keys_and_a_duration_out_of_range_is_shown(tmp_path):
    found = problems(tmp_path, """\
program:
  points:
rendering: [1]
segments: {timeout: 2 days}
tiers:
  levels: [{name: member, threshold: 0}, {name: gold, threshold: 100}]
  qualification: {grace: 400 days}
""")
    assert found == [
        "config.yaml:2:10: program.points: expected a mapping (keys: expiry) (found null)",
        "config.yaml:3:12: rendering: expected a mapping (keys: timeout, max_bytes) (found a list)",
        "config.yaml:4:21: segments.timeout: Input should be less than or equal to 1 day (found 2 days)",
        "config.yaml:7:26: tiers.qualification.grace: Input should be less than or equal to 366 days "
        "(found 400 days)",
    ]


def test_tier_ladder_rules(tmp_path):
    assert problems(tmp_path, "tiers:\n  levels:\n    - {name: silver, threshold: 100}\n") == [
        "config.yaml:3:5: tiers.levels: the first tier ('silver') must have threshold 0"]
    assert problems(tmp_path, "tiers:\n  levels:\n    - {name: a, threshold: 0}\n"
                              "    - {name: b, threshold: 50}\n    - {name: c, threshold: 50}\n") == [
        "config.yaml:3:5: tiers.levels: thresholds must increase: 'c' (50) is not above 'b' (50)"]
    assert problems(tmp_path, "tiers:\n  levels:\n    - {name: a, threshold: 0}\n"
                              "    - {name: a, threshold: 5}\n") == [
        "config.yaml:3:5: tiers.levels: tier names must be unique; repeated: a"]


def test_yaml_syntax_errors_and_duplicate_keys(tmp_path):
    assert problems(tmp_path, "program:\n  name: [unclosed\n") == [
        "config.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'"]
    assert problems(tmp_path, "program:\n  name: A\n  name: B\n") == [
        "config.yaml:3:3: duplicate key 'name' (first given at line 2)"]
    assert problems(tmp_path, "- just\n- a list\n") == [
        "config.yaml:1:1: the top level must be a mapping of sections"]


def test_secrets_come_from_the_environment(tmp_path):
    text = "tracking:\n  secret: ${TRACKING_SECRET}\n  base_url: ${BASE:-https://t.example}\n"
    settings = load_settings(write(tmp_path, text), environ={"TRACKING_SECRET": "k3y-F0r-T3sts-9qZ"})
    assert (settings.tracking.secret, settings.tracking.base_url) == (("k3y-F0r-T3sts-9qZ",), "https://t.example")
    assert problems(tmp_path, text) == [
        "config.yaml:2:11: tracking.secret: environment variable TRACKING_SECRET is not set "
        "(set it, or write ${TRACKING_SECRET:-} to leave it unset)"]
    listed = "tracking:\n  secret: ['${TRACKING_SECRET}', '${OLD_SECRET}']\n"
    assert problems(tmp_path, listed) == [
        "config.yaml:2:12: tracking.secret[0]: environment variable TRACKING_SECRET is not set "
        "(set it, or write ${TRACKING_SECRET:-} to leave it unset)",
        "config.yaml:2:34: tracking.secret[1]: environment variable OLD_SECRET is not set "
        "(set it, or write ${OLD_SECRET:-} to leave this older secret out)"]


def test_precedence_defaults_file_environment_flag(tmp_path):
    write(tmp_path, "database:\n  url: sqlite:///from-file.db\n")
    assert load_settings(tmp_path, environ={}).database.url == "sqlite:///from-file.db"
    env = {"LOYALTY_MAIL_DATABASE_URL": "sqlite:///from-env.db"}
    assert load_settings(tmp_path, environ=env).database.url == "sqlite:///from-env.db"
    assert load_settings(tmp_path, environ=env, database_url="sqlite:///flag.db").database.url == "sqlite:///flag.db"


def test_missing_config_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match=r"no config.yaml in .*Run `loyalty-mail init"):
        load_settings(tmp_path, environ={})


def test_flow_mistakes_name_the_line_and_what_is_allowed(tmp_path):
    text = """flows:
  - name: welcome
    trigger: signup
    template: welcome
  - name: winback
    trigger: reengagement
    template: reengagement
  - name: late
    trigger: welcome
    template: welcome
    lateness: two days
sending:
  quiet_hours: {start: "25:00"}
"""
    found = problems(tmp_path, text)
    assert found[0].startswith("config.yaml:3:14: flows[0].trigger: Input should be 'welcome', 'milestone', "
                               "'tier_upgrade', 'reengagement', 'event', 'points_expiring', 'tier_at_risk', 'tier_downgrade', 'birthday', "
                                   "'reward_available', 'statement' or 'confirmation'")
    assert found[1].startswith("config.yaml:5:5: flows[1]: flow 'winback': a reengagement flow needs `segment:`")
    assert found[2].startswith("config.yaml:11:15: flows[2].lateness: expected a duration such as '30 minutes'")
    assert found[3].startswith("config.yaml:13:24: sending.quiet_hours.start: expected a time of day as HH:MM")


def test_a_flow_naming_an_unknown_segment_is_a_problem_without_a_line(tmp_path):
    from loyalty_mail.flows import Planner
    from loyalty_mail.segments import SegmentCatalog

    settings = load_settings(write(tmp_path, """flows:
  - name: winback
    trigger: reengagement
    template: reengagement
    segment: lapsed
"""), environ={})
    with pytest.raises(ConfigError) as caught:
        Planner(settings, SegmentCatalog({}), "sqlite")
    [problem] = caught.value.problems
    assert problem.location is None
    assert problem.message == "flow 'winback': unknown segment 'lapsed' (segments: none)"


def test_a_key_no_longer_used_is_refused_saying_so(tmp_path):
    assert problems(tmp_path, "tracking:\n  base_url: https://t.example\n  flush_interval: 1 second\n") == [
        "config.yaml:3:3: tracking.flush_interval is no longer used: opens and clicks are written as they "
        "arrive (tracking.write_timeout bounds how long a write may wait); remove it"]


def test_the_example_perks_keep_their_thousands_separators():
    """In a YAML flow list a comma separates items: a perk holding `1,000` must be quoted."""
    settings = load_settings(Path(__file__).resolve().parents[1], environ={})
    perks = {level.name: level.perks_for("en", "vi") for level in settings.tiers.levels}
    assert perks["member"] == ("1 point per 1,000 VND", "Birthday voucher")
    assert "Free delivery on orders over 300,000 VND" in perks["silver"]


PROGRAM = """\
program:
  default_locale: vi
  locales: [vi, en]
"""


def test_per_locale_texts_name_the_program_locales_and_cover_them(tmp_path):
    """A typo in a locale (`vn:`) is never used, and a missing locale shows members another
    language: both are errors at the text's line."""
    found = problems(tmp_path, PROGRAM + """\
tiers:
  levels:
    - {name: member, threshold: 0, label: {vi: Thành viên, en: Member}, perks: {en: [Coffee]}}
rewards:
  - {name: spa_day, cost: 10000, label: {vi: Spa, en: Spa}}
  - {name: coffee, cost: 500, label: {en: A coffee, vn: Cà phê}}
topics:
  - {name: news, label: {vi: Tin tức, en: News}, description: {}}
""")
    assert found == [
        "config.yaml:6:80: tier 'member' perks: no text for 'vi' (program.locales: vi, en)",
        "config.yaml:9:38: reward 'coffee' label: no text for 'vi' (program.locales: vi, en)",
        "config.yaml:9:57: reward 'coffee' label: 'vn' is not one of program.locales (vi, en)",
        "config.yaml:11:63: topic 'news' description: no text for 'vi' (program.locales: vi, en)",
        "config.yaml:11:63: topic 'news' description: no text for 'en' (program.locales: vi, en)",
    ]
    settings = load_settings(write(tmp_path, PROGRAM + "rewards:\n  - {name: coffee, cost: 500, label: "
                                   "{vi: Cà phê, en: A coffee}}\n  - {name: tea, cost: 5, label: Tea}\n"),
                             environ={})
    assert [r.label_for("vi", "vi") for r in settings.rewards] == ["Tea", "Cà phê"]


def test_a_statement_schedule_that_never_comes_is_an_error(tmp_path):
    found = problems(tmp_path, """\
flows:
  - {name: statement, trigger: statement, template: statement, class: service, schedule: "0 9 30 2 *"}
""")
    assert found == ["config.yaml:2:90: flows[0].schedule: '0 9 30 2 *' never comes (a day no month has, such "
                     "as 30 February); '0 9 last * *' is the last day of every month"]


LADDER = "  levels: [{name: member, threshold: 0}, {name: gold, threshold: 10}]\n"


@pytest.mark.parametrize("tiers, message", [
    (LADDER + "  qualification: {period: 1 day, grace: 300 days}\n",
     "config.yaml:4:18: tiers.qualification: grace (300 days) must be shorter than the period (1 day): activity "
     "in the grace counts towards the period before it, so periods would overlap"),
    (LADDER + "  qualification: {period: 2 weeks}\n",
     "config.yaml:4:18: tiers.qualification: grace (30 days) must be shorter than the period (2 weeks): activity "
     "in the grace counts towards the period before it, so periods would overlap"),
    ("  levels: [{name: member, threshold: 0}, {name: gold, threshold: 1e400}]\n",
     "config.yaml:3:11: tiers.levels: the threshold of 'gold' (1E+400) is above 10,000,000,000,000,000: no "
     "balance or spend reaches it"),
    ("  levels: [{name: member, threshold: 0}, {name: gold, threshold: 3000000000}]\n",
     "config.yaml:2:3: tiers: the threshold of 'gold' (3000000000) is above 2,147,483,647 points, the most a "
     "balance holds"),
])
def test_tier_rules_no_member_can_follow_are_errors(tmp_path, tiers, message):
    assert problems(tmp_path, "tiers:\n  basis: points\n" + tiers) == [message]
