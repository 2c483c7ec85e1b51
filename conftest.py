"""The suite's root: load the acgs-checks plugin for everything under checks/."""

pytest_plugins = ["acgs_checks.plugin"]
