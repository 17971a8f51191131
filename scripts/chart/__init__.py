"""Checks and generation around the Helm chart charts/redsess: see __main__.py, scripts/check-chart
and scripts/generate-deploy."""
