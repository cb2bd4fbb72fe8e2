"""The webhook receiver and delivery lanes of the notification tests, for the story tests."""

from tests.notifications.conftest import receiver, sender

__all__ = ["receiver", "sender"]
