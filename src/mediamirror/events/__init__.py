"""Bucket notifications: one parser per format, applied to the catalog like a sync."""
