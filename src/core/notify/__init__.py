"""Run notifications: templates over a run's outcome, e-mail (SMTP) and Slack (incoming webhook)
delivery with bounded retries, and the safety checks on webhook URLs.

Used by the ``notify_systems.*`` processors (pipeline steps) and by the per-organization
notification preferences (``services/notifications.py``).
"""
