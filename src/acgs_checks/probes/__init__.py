"""Probes: plain Python that measures a target and returns what it saw.

Probes never decide pass or fail and never raise for an unhealthy target:
unhealthy is data. They have no pytest imports and can be used from a REPL::

    >>> from acgs_checks.probes.http import probe_services
    >>> probe_services([service])["auth"].status
"""
