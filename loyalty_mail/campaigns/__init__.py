"""One-off campaigns (broadcasts): a file in campaigns/, scheduled, then sent by the planner.

    spec.py       campaigns/<name>.yaml -> Campaign (file:line:column errors); send times
    schedule.py   schedule and cancel (all campaign_schedules writes); what is scheduled at an instant

Members are found and sent to by the same planner and ledger as flows (flows/occurrences.py
`campaign`): a campaign is a flow whose only occurrence per member is `campaign`.
"""

from .schedule import Scheduled, cancel, schedule, scheduled
from .schedule import digest as schedule_digest
from .spec import CAMPAIGNS_DIR, SEND_LIMIT, Campaign, Throttle, load_campaigns, parse_campaign, reference_problems

__all__ = ["CAMPAIGNS_DIR", "SEND_LIMIT", "Campaign", "Scheduled", "Throttle", "cancel", "load_campaigns", "parse_campaign",
           "reference_problems", "schedule", "schedule_digest", "scheduled"]
