"""Derive the demo-data profile from real purchase history (the CDNOW data set).

    python -m loyalty_mail.seeding.calibrate ../shared/corpus/datasets/lifetimes_cdnow/CDNOW_master.txt

writes `cdnow_profile.json` beside this file: how many orders customers place over the
observation window, the gaps between their orders and what an order is worth. The generator
samples from it, so demo programs look like a real store without shipping the data set.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

PROFILE = Path(__file__).with_name("cdnow_profile.json")
QUANTILES = 100


def quantiles(values: list[float], n: int = QUANTILES) -> list[float]:
    """n+1 evenly spaced empirical quantiles (nearest rank), min to max."""
    ordered = sorted(values)
    last = len(ordered) - 1
    return [round(ordered[round(i * last / n)], 2) for i in range(n + 1)]


def build_profile(path: Path) -> dict:
    """Orders per customer (same-day rows are one order), gaps in days and order values."""
    orders: dict[str, dict[date, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    first_day, last_day = date.max, date.min
    for line in path.read_text().splitlines()[1:]:
        customer, day, cds, dollars = line.split()
        when = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        first_day, last_day = min(first_day, when), max(last_day, when)
        order = orders[customer][when]
        order[0] += int(cds)
        order[1] += float(dollars)
    counts: dict[int, int] = defaultdict(int)
    gaps: list[float] = []
    values: list[float] = []
    items: dict[int, int] = defaultdict(int)
    for by_day in orders.values():
        days = sorted(by_day)
        counts[len(days)] += 1
        gaps += [(b - a).days for a, b in zip(days, days[1:])]
        for when in days:
            cd_count, value = by_day[when]
            if value > 0:
                values.append(value)
            items[min(int(cd_count), 20)] += 1
    return {
        "source": "CDNOW_master.txt (lifetimes 0.11.3, MIT)",
        "customers": len(orders),
        "window_days": (last_day - first_day).days + 1,
        "orders_per_customer": {str(k): counts[k] for k in sorted(counts)},
        "gap_days_quantiles": quantiles(gaps),
        "order_value_usd_quantiles": quantiles(values),
        "items_per_order": {str(k): items[k] for k in sorted(items)},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 1
    profile = build_profile(Path(argv[0]))
    PROFILE.write_text(json.dumps(profile, indent=1) + "\n")
    print(f"wrote {PROFILE} from {profile['customers']} customers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
