"""The ETL stage: extract raw files, validate and clean rows, load them into the store."""
