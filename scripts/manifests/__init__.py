"""Checks of the Kubernetes manifests: see __main__.py and scripts/check-manifests."""
