"""The runbook's alerting as code: Prometheus alert rules (``rules``) from the same thresholds and PromQL the
checks evaluate, written as YAML (``yaml_text``)."""
