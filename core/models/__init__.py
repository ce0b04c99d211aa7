"""Model adapters: one module per family, behind the protocol in :mod:`core.models.base`."""
