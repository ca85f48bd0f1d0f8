"""Sync: listing a source page by page, diffing against the catalog, writing in batches."""
