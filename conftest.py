"""Root of the suite.

The acgs-checks plugin is loaded through its ``pytest11`` entry point (so ``--env PATH``
is known before pytest picks the rootdir) and armed by ``acgs_checks = true`` in
pyproject.toml. Checks live in ``checks/``; they need no fixtures from here.
"""
