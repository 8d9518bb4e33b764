"""Item ID -> concept lookup of a source's tables, from the concept dictionary, vectorised.

A streaming reader maps every kept row of an event table onto the dictionary concept of its
item and into the concept's unit (`value * scale + offset`: °F -> °C, lb -> kg, negated items).
The lookups are numpy arrays indexed by item ID, so a batch of millions of rows costs a few
array takes, and the concept names come out of a small string array by `take`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from data_prep.concepts.dictionary import Dictionary, concepts


class ConceptMap:
    """Concept, scale and offset per item ID of one or more tables of `source`."""

    def __init__(
        self, source: str, tables: str | Iterable[str], dictionary: Dictionary | None = None
    ):
        d = dictionary if dictionary is not None else concepts()
        tables = (tables,) if isinstance(tables, str) else tuple(tables)
        items: dict[int, tuple[str, float, float]] = {}
        for t in tables:
            items.update(d.items(source, t))
        if not items:
            raise ValueError(f"{d.path}: no {source} items for table(s) {tables}")
        names = list(dict.fromkeys(c for c, _, _ in items.values()))
        size = max(items) + 1
        self.items = items
        self.code = np.full(size, -1, np.int32)
        self.scale = np.ones(size)
        self.offset = np.zeros(size)
        self.converted = np.zeros(size, bool)
        for item, (name, scale, offset) in items.items():
            self.code[item] = names.index(name)
            self.scale[item], self.offset[item] = scale, offset
            self.converted[item] = (scale, offset) != (1.0, 0.0)
        self.names = pa.array(names, pa.string())
        self.ids = pa.array(sorted(items), pa.int32())  # the value set of `keep_items`
        # items whose charted text is kept (`text_ids` of the dictionary mappings)
        self.text_ids = pa.array(
            sorted(
                {
                    i
                    for c in d.concepts.values()
                    for t in tables
                    for m in c.mappings(source, t)
                    for i in m.extra.get("text_ids", ())
                }
            ),
            pa.int32(),
        )

    def of(self, names: Iterable[str]) -> np.ndarray:
        """The item IDs of these concepts (sorted)."""
        want = set(names)
        return np.array(sorted(i for i, (c, _, _) in self.items.items() if c in want), np.int64)

    def concept(self, item: np.ndarray) -> pa.Array:
        """Concept names of known items (string array)."""
        return self.names.take(pa.array(self.code[item]))

    def value(self, item: np.ndarray, value: pa.Array) -> pa.Array:
        """`value` in the concepts' units: value * scale + offset on the converted items only
        (nulls stay null); float64."""
        value = value.cast(pa.float64())
        rows = np.flatnonzero(self.converted[item])
        if not len(rows):
            return value
        v = value.to_numpy(zero_copy_only=False)  # NaN where null
        if not v.flags.writeable:
            v = v.copy()
        it = item[rows]
        v[rows] = v[rows] * self.scale[it] + self.offset[it]
        mask = value.is_null().to_numpy(zero_copy_only=False) if value.null_count else None
        return pa.array(v, pa.float64(), mask=mask)
