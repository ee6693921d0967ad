"""Points that expire, in the order data flows: lots.py (events -> lots, pure), store.py (the
`point_lots` table, rebuilt by every import), expiry.py (the job recording `points_expired`
events through the event import). The importer uses store.py; expiry.py uses the importer."""
