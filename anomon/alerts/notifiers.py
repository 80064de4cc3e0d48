"""One notifier per configured receiver."""

from __future__ import annotations

from anomon.alerts.model import Notifier
from anomon.config import (
    AlertmanagerReceiverConfig,
    AlertsConfig,
    AnyReceiverConfig,
    CommandReceiverConfig,
    WebhookReceiverConfig,
)


def build_notifier(config: AnyReceiverConfig, *, external_url: str = "") -> Notifier:
    """Return the notifier of one ``[[alerts.receivers]]`` entry (nothing connects yet);
    ``external_url`` is where people reach anomon (``[daemon] external_url``)."""
    if isinstance(config, AlertmanagerReceiverConfig):
        from anomon.alerts.alertmanager import AlertmanagerNotifier

        return AlertmanagerNotifier(config)
    if isinstance(config, CommandReceiverConfig):
        from anomon.alerts.command import CommandNotifier

        return CommandNotifier(config)
    if isinstance(config, WebhookReceiverConfig):
        from anomon.alerts.webhook import WebhookNotifier

        return WebhookNotifier(config, external_url=external_url)
    from anomon.alerts.email import EmailNotifier

    return EmailNotifier(config)


def build_notifiers(config: AlertsConfig, *, external_url: str = "") -> dict[str, Notifier]:
    """Return a notifier per receiver, by name."""
    return {
        receiver.name: build_notifier(receiver, external_url=external_url)
        for receiver in config.receivers
    }
