"""The catalog: the database of sources, folders, items, datasets, sync runs and jobs."""

from mediamirror.catalog.db import Catalog

__all__ = ["Catalog"]
