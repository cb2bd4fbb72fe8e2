"""JSONPath: the fast lookup for plain paths answers exactly like jsonpath-ng would."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonpath_ng.ext.parser import parse

from allotment.metering.jsonpath import MISSING, InvalidPath, compile_path

NAMES = ["a", "b", "n_1", "x-y"]
QUOTED = ["a", "x-y", "b c", "a.b"]
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=3)
keys = st.sampled_from(sorted({*NAMES, *QUOTED}))
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
steps = st.one_of(
    st.sampled_from(NAMES).map(lambda name: f".{name}"),
    st.sampled_from(QUOTED).map(lambda name: f"['{name}']"),
    st.integers(0, 3).map(lambda index: f"[{index}]"),
)
plain_paths = st.lists(steps, max_size=4).map(lambda parts: "$" + "".join(parts))


def jsonpath_ng_first(path: str, data: Any) -> Any:
    found = parse(path).find(data)
    return found[0].value if found else MISSING


@given(plain_paths, documents)
def test_plain_paths_agree_with_jsonpath_ng(path: str, data: Any) -> None:
    """Member, quoted-member and index steps find what jsonpath-ng finds, or nothing alike."""
    assert compile_path(path)(data) == jsonpath_ng_first(path, data)


@pytest.mark.parametrize(
    ("path", "data", "found"),
    [
        ("$.a.b[0]", {"a": {"b": [7, 8]}}, 7),
        ("$['x-y']", {"x-y": 3}, 3),
        ("$.usage.input", {"usage": {"input": 0.5}}, 0.5),
        ("$.items[1].qty", {"items": [{"qty": 1}, {"qty": 2}]}, 2),
        ("$.items[?(@.kind == 'in')].qty", {"items": [{"kind": "out", "qty": 1}, {"kind": "in", "qty": 5}]},
         5),
        ("$.items[*].qty", {"items": [{"qty": 4}, {"qty": 9}]}, 4),
        ("$.items[-1]", {"items": [1, 2, 3]}, 3),
    ],
)
def test_path_finds_the_value(path: str, data: Any, found: Any) -> None:
    """Plain and rich paths (filters, wildcards, negative indexes) find the first match."""
    assert compile_path(path)(data) == found


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("$.a.b[0]", {"a": {"b": []}}),
        ("$.a.b[0]", {"a": {"b": "xyz"}}),
        ("$.a[0]", {"a": {"0": 1}}),
        ("$.a", [1, 2]),
        ("$.items[?(@.kind == 'in')].qty", {"items": [{"kind": "out", "qty": 1}]}),
    ],
)
def test_path_without_a_match_is_missing(path: str, data: Any) -> None:
    assert compile_path(path)(data) is MISSING


@pytest.mark.parametrize("path", ["tokens", "a.b", "$.a[", "$[?(@.x ==]"])
def test_invalid_path_is_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        compile_path(path)
