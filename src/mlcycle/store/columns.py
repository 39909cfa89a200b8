"""Stored rows as Arrow columns typed by the spec: how training and batch scoring read a
table, a chunk at a time, never as one list of Python documents.

The embedded store hands a chunk of stored JSON texts to pyarrow's JSON reader (C++,
typed by the schema); MongoDB's decoded documents become typed arrays a column at a
time. Either way a value the column's type cannot take stops the read with the row's
`_id` and the column named: nothing is coerced or dropped in silence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import orjson

from mlcycle.errors import StoredValueError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlcycle.spec import DatasetSpec

LINEAGE = ("_hash", "_batch_id")
JSON_BLOCK = 1 << 20
"""Bytes of JSON text pyarrow parses as one block (a longer document gets its own)."""


def arrow_type(kind: str) -> pa.DataType:
    import pyarrow as pa

    return {
        "integer": pa.int64(),
        "float": pa.float64(),
        "boolean": pa.bool_(),
    }.get(kind, pa.string())


def schema_for(spec: DatasetSpec, columns: Iterable[str]) -> pa.Schema:
    """The Arrow schema of `columns` as the spec types them (lineage fields are text).
    Columns of few distinct values (categories, booleans' text, the ETL batch) are
    marked to be kept dictionary-encoded: an index per row, not the text."""
    import pyarrow as pa

    fields = []
    for name in columns:
        if name in spec.columns:
            kind = spec.columns[name].type
            few = kind == "category"
            fields.append(pa.field(name, arrow_type(kind), metadata=_FEW if few else None))
        elif name == "_id":
            fields.append(pa.field(name, arrow_type(spec.columns[spec.id_column].type)))
        elif name in LINEAGE:
            fields.append(
                pa.field(name, pa.string(), metadata=_FEW if name == "_batch_id" else None)
            )
        else:
            raise KeyError(f"column {name!r} is not in the spec of {spec.name!r}")
    return pa.schema(fields)


_FEW = {b"mlcycle": b"dictionary"}


def from_documents(docs: Sequence[Mapping[str, Any]], schema: pa.Schema, dataset: str) -> pa.Table:
    """Decoded documents as one typed table (a field a document lacks is null)."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        values = [doc.get(field.name) for doc in docs]
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            raise _untypable(docs, values, field, dataset) from None
    return pa.Table.from_arrays(arrays, schema=schema)


def from_json_lines(text: bytes, schema: pa.Schema, dataset: str) -> pa.Table:
    """Newline-separated stored JSON documents as one typed table."""
    import pyarrow as pa
    import pyarrow.json as pajson

    try:
        return pajson.read_json(
            pa.py_buffer(text),
            read_options=pajson.ReadOptions(block_size=JSON_BLOCK),
            parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # a value of another type, or one document longer than a block: decode them
        # here, which either fits the schema or names the row and column
        docs = [orjson.loads(line) for line in text.split(b"\n") if line]
        return from_documents(docs, schema, dataset)


def _untypable(
    docs: Sequence[Mapping[str, Any]], values: list[Any], field: pa.Field, dataset: str
) -> StoredValueError:
    import pyarrow as pa

    for doc, value in zip(docs, values, strict=True):
        try:
            pa.array([value], type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return StoredValueError(
                f"stored row {doc.get('_id')!r} of dataset {dataset!r} holds {shown} in column "
                f"{field.name!r}, which the spec types as {field.type}: fix the row at its "
                "source and rerun `mlcycle etl`, or correct the spec"
            )
    return StoredValueError(
        f"column {field.name!r} of dataset {dataset!r} cannot be read as {field.type}"
    )


def kept(part: pa.Table, require: str | None, schema: pa.Schema) -> pa.Table:
    """A chunk without the rows whose `require` column is null, its columns of few
    distinct values dictionary-encoded (`schema_for`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if require is not None:
        part = part.filter(pc.is_valid(part[require]))
    columns = [
        pc.dictionary_encode(column) if (schema.field(name).metadata or {}) == _FEW else column
        for name, column in zip(part.column_names, part.columns, strict=True)
    ]
    return pa.table(columns, names=part.column_names)


def concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """The chunks as one table (none: the schema's empty table, encoded as `kept`)."""
    import pyarrow as pa

    return pa.concat_tables(parts) if parts else kept(schema.empty_table(), None, schema)


class TextColumn(Sequence[str]):
    """A column of text kept as Arrow (its bytes and an offset per row, not a Python
    object per row) that reads like a list of str: ids and row hashes of a snapshot."""

    STEP = 1 << 16

    def __init__(self, array: pa.ChunkedArray | pa.Array) -> None:
        import pyarrow as pa

        if isinstance(array, pa.Array):
            array = pa.chunked_array([array], type=array.type)
        self.arrow = array

    def __len__(self) -> int:
        return len(self.arrow)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> TextColumn: ...

    def __getitem__(self, index: int | slice) -> str | TextColumn:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return TextColumn(self.arrow.slice(start, max(0, stop - start)))
            import pyarrow as pa

            return TextColumn(self.arrow.take(pa.array(range(start, stop, step), pa.int64())))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return str(self.arrow[index].as_py())

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), self.STEP):
            yield from self.arrow.slice(start, self.STEP).to_pylist()

    def __repr__(self) -> str:
        return f"TextColumn({len(self)} rows)"
