"""Alerts: the incident state machine, routing, and the notifiers (webhook, email)."""
