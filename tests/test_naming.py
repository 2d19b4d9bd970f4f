"""Salesforce-safe names (spec §5): every output obeys the rules, groups stay unique ignoring
case, already-safe names survive, and nothing depends on input order."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odata.naming import assign_names, safe_name

# The rules restated from the spec, independently of the module's own check.
RULE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")


def obeys_rules(name: str) -> bool:
    return RULE.fullmatch(name) is not None and "__" not in name and not name.endswith("_")


no_db = settings(database=None)  # keep hypothesis' example store out of the shared tree

# Identifiers as PostgreSQL allows them when quoted: any characters, NUL excepted.
raw_names = st.text(st.characters(exclude_characters="\x00"), max_size=80)
safe_names = st.from_regex(r"[A-Za-z](_?[A-Za-z0-9]){0,19}", fullmatch=True)


@no_db
@given(raw_names)
def test_safe_name_output_obeys_salesforce_rules(raw: str) -> None:
    assert obeys_rules(safe_name(raw))


@no_db
@given(safe_names)
def test_safe_name_leaves_an_already_safe_name_unchanged(raw: str) -> None:
    assert safe_name(raw) == raw


@no_db
@given(st.lists(raw_names, max_size=12), st.lists(raw_names, max_size=3))
def test_assign_names_gives_unique_safe_names_avoiding_reserved(
    raws: list[str], reserved: list[str]
) -> None:
    names = assign_names(raws, reserved=reserved)
    assert set(names) == set(raws)
    assert all(obeys_rules(n) for n in names.values())
    folded = [n.casefold() for n in names.values()]
    assert len(set(folded)) == len(folded)
    assert not set(folded) & {r.casefold() for r in reserved}


@no_db
@given(st.lists(safe_names, max_size=12, unique_by=str.casefold))
def test_assign_names_keeps_a_group_of_distinct_safe_names(raws: list[str]) -> None:
    assert assign_names(raws) == {r: r for r in raws}


@no_db
@given(st.lists(raw_names, max_size=12), st.randoms(use_true_random=False))
def test_assign_names_does_not_depend_on_input_order(raws: list[str], rnd: random.Random) -> None:
    shuffled = list(raws)
    rnd.shuffle(shuffled)
    assert assign_names(shuffled) == assign_names(raws)


@no_db
@given(safe_names, st.sampled_from(["_", "__", " ", "-", "."]))
def test_safe_name_wins_over_an_unsafe_name_that_maps_onto_it(name: str, tail: str) -> None:
    names = assign_names([name + tail, name])
    assert names[name] == name
    assert names[name + tail] != name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("salesid", "salesid"),
        ("Sales", "Sales"),
        ("catid__c", "catid_c"),  # Heroku Connect custom field
        ("category__c", "category_c"),
        ("café", "cafe"),
        ("Crème Brûlée", "Creme_Brulee"),
        ("Straße", "Strasse"),
        ("order-date", "order_date"),
        ("public.sales", "public_sales"),
        ("unit price ($)", "unit_price"),
        ("total__", "total"),
        ("2024 sales", "X2024_sales"),  # leading digit: prefixed with X
        ("_hc_lastop", "X_hc_lastop"),  # leading underscore: prefixed with X
        ("a" * 40, "a" * 40),
    ],
)
def test_safe_name_transforms_postgres_identifiers(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


def test_names_without_any_latin_letter_get_distinct_hashed_names() -> None:
    names = [safe_name(raw) for raw in ["", "日本", "中国", "___", "€"]]
    assert all(re.fullmatch(r"X_[0-9a-f]{6}", n) for n in names)
    assert len(set(names)) == len(names)


def test_long_names_sharing_a_prefix_are_truncated_to_distinct_names() -> None:
    first, second = (
        "quarterly_revenue_by_region_and_product_line",
        "quarterly_revenue_by_region_and_product_family",
    )
    a, b = safe_name(first), safe_name(second)
    assert len(a) <= 40 and len(b) <= 40
    assert a != b
    assert a[:30] == first[:30] and b[:30] == second[:30]
    assert safe_name(first) == a  # stable across calls


def test_double_underscore_collision_suffixes_the_unsafe_name() -> None:
    assert assign_names(["catid__c", "catid_c"]) == {"catid_c": "catid_c", "catid__c": "catid_c_2"}


def test_names_differing_only_in_case_are_made_distinct() -> None:
    names = assign_names(["sales", "Sales", "SALES"])
    assert len({n.casefold() for n in names.values()}) == 3
    assert sum(raw == name for raw, name in names.items()) == 1


def test_reserved_name_is_avoided_case_insensitively() -> None:
    assert assign_names(["Id", "Name"], reserved=["id"]) == {"Id": "Id_2", "Name": "Name"}


def test_suffix_never_takes_a_name_another_identifier_has_as_its_own() -> None:
    names = assign_names(["x-y", "x y", "x_y_2"])
    assert names["x_y_2"] == "x_y_2"
    assert sorted([names["x-y"], names["x y"]]) == ["x_y", "x_y_3"]


def test_suffix_on_a_40_character_name_keeps_it_within_40() -> None:
    names = assign_names(["A" * 40, "a" * 40])
    suffixed = [n for raw, n in names.items() if n != raw]
    assert len(suffixed) == 1
    assert len(suffixed[0]) == 40 and suffixed[0].endswith("_2")
