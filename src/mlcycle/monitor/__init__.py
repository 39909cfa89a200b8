"""The monitoring stage: reference profiles, drift, realized performance, dashboard."""
