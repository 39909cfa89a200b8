"""The column rules, in one room: what a value of each spec column may be and what it
becomes.

- `values`: the shared vocabulary (numbers as text, booleans, the missing word, limits).
- `frames`: the rules on a table of raw values (pyarrow, vectorised): the ETL's path,
  files and Kafka batches (`validate_chunk`).
- `records`: the same rules on JSON records and DataFrame columns (plain Python and
  numpy): the API's decoder and the MLflow pyfunc model (`RequestValidator`).

Both paths give the same verdict in the same words for the same value; a test
(`tests/unit/test_rules_agree.py`) holds them to it.
"""
