"""Storage behind a small protocol, with real backends chosen from Settings."""

from mlcycle.store.base import Store, open_store

__all__ = ["Store", "open_store"]
