"""Reporting: Allure labels and files, evidence attachments."""
