"""Notifications: an outbox in the catalog, a sender, and the email and webhook channels."""
