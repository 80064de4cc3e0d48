from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anomon.model import Sample, SeriesInfo, SeriesKey, canonical_labels

label_sets = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6)


@given(label_sets)
def test_canonical_labels_do_not_depend_on_order(labels: dict[str, str]) -> None:
    reversed_order = dict(reversed(list(labels.items())))
    assert canonical_labels(labels) == canonical_labels(reversed_order)
    assert SeriesKey.of("m", labels) == SeriesKey.of("m", reversed_order)


def test_canonical_labels_are_compact_sorted_json() -> None:
    assert canonical_labels({"model": "churn", "host": "a"}) == '{"host":"a","model":"churn"}'
    assert canonical_labels({}) == "{}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_sample_refuses_non_finite_values(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Sample(SeriesKey.of("m", {}), SeriesInfo("s", "e"), 0, value)
