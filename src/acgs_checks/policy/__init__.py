"""What the runbook says: its requirements (``runbook.toml``, ``runbook``), the incident levels (``severity``)
and the thresholds (``thresholds``)."""
