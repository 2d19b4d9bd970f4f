"""The plan stage without HTTP or a database: names are checked and expressions typed here, and
the shapes the SQL stage relies on are decided here (an `or` chain on one property is one IN;
every order ends with the key). Writes get a WritePlan the same way."""

from __future__ import annotations

from decimal import Decimal

import pytest

from odata import etags
from odata.errors import InvalidBody, MethodNotAllowed, ResourceNotFound, UnknownProperty
from odata.plan import Col, CollectionPlan, Compare, InList, Lit, Logic
from odata.write import WritePlan, plan_write
from tests.model_fixture import AMOUNT, ID, NOTE, REGION, SALES, STAMP, VIEW, plan_of


def collection(filter_: str | None = None, **options: str) -> CollectionPlan:
    p = plan_of("Sales", filter_, **options)
    assert isinstance(p, CollectionPlan)
    return p


def test_eq_is_a_comparison_of_the_column_with_a_typed_literal() -> None:
    where = collection("Region eq 'WEST'").where
    assert where == Compare("eq", Col(REGION), Lit("WEST", "Edm.String"))


def test_a_literal_on_the_left_still_compares_the_column() -> None:
    where = collection("'WEST' eq Region").where
    assert isinstance(where, Compare) and where.op == "eq"
    assert Col(REGION) in (where.left, where.right)


def test_an_or_chain_on_one_property_becomes_one_in_list() -> None:
    where = collection("Region eq 'A' or Region eq 'B' or Region eq 'C'").where
    assert isinstance(where, InList)
    assert where.left == Col(REGION)
    assert [i.value for i in where.items] == ["A", "B", "C"]


def test_an_or_chain_over_two_properties_stays_an_or() -> None:
    where = collection("Region eq 'A' or Note eq 'B'").where
    assert isinstance(where, Logic) and where.op == "or" and len(where.operands) == 2


def test_an_or_chain_with_another_operator_stays_an_or() -> None:
    where = collection("Region eq 'A' or Region ne 'B'").where
    assert isinstance(where, Logic) and where.op == "or"


def test_a_decimal_literal_is_typed_by_the_property() -> None:
    where = collection("Amount gt 10.5").where
    assert isinstance(where, Compare) and where.left == Col(AMOUNT)
    assert isinstance(where.right, Lit) and where.right.value == Decimal("10.5")


def test_every_order_ends_with_the_key() -> None:
    order = collection(orderby="Region desc").order
    assert [(k.expr, k.descending) for k in order] == [(Col(REGION), True), (Col(ID), False)]
    assert [k.expr for k in collection().order] == [Col(ID)]


def test_an_unknown_property_is_refused_with_a_suggestion() -> None:
    with pytest.raises(UnknownProperty) as err:
        collection("Regoin eq 'A'")
    assert "did you mean 'Region'?" in err.value.message


def test_an_unknown_entity_set_is_a_404_with_a_suggestion() -> None:
    with pytest.raises(ResourceNotFound) as err:
        plan_of("Sale")
    assert "did you mean 'Sales'?" in err.value.message


# -- writes ------------------------------------------------------------------------------------

KEY = ((ID, Lit(7, "Edm.Int32")),)


def test_a_post_plans_a_create_with_checked_values() -> None:
    p = plan_write(SALES, "POST", (), {"Id": 7, "Region": "WEST", "Note": None})
    assert (p.kind, p.entity, p.key) == ("create", "Sales", ())
    assert [prop for prop, _ in p.values.items] == [ID, REGION, NOTE]
    assert dict((prop.name, v) for prop, v in p.values.items)["Note"] is None


@pytest.mark.parametrize(
    ("method", "kind"), [("PATCH", "update"), ("PUT", "replace"), ("DELETE", "delete")]
)
def test_each_method_plans_its_kind_of_write_on_the_keyed_entity(method: str, kind: str) -> None:
    body = None if method == "DELETE" else {"Region": "EAST"}
    pre = etags.Precondition(if_match=("x",), if_none_match=None)
    p = plan_write(SALES, method, KEY, body, pre)
    assert isinstance(p, WritePlan)
    assert (p.kind, p.entity, p.key, p.precondition) == (kind, "Sales(7)", KEY, pre)
    assert [prop for prop, _ in p.values.items] == ([] if body is None else [REGION])


def test_computed_properties_in_a_body_are_ignored() -> None:
    p = plan_write(SALES, "PATCH", KEY, {"Region": "EAST", "Stamp": "2024-01-01T00:00:00Z"})
    assert STAMP not in [prop for prop, _ in p.values.items]


def test_changing_the_key_is_refused_before_any_sql() -> None:
    with pytest.raises(InvalidBody) as err:
        plan_write(SALES, "PATCH", KEY, {"Id": 8})
    assert err.value.target == "Id" and "is the key" in err.value.message
    plan_write(SALES, "PATCH", KEY, {"Id": 7, "Region": "EAST"})  # the same key is fine


def test_an_unknown_name_in_a_body_is_refused_with_a_suggestion() -> None:
    with pytest.raises(InvalidBody) as err:
        plan_write(SALES, "POST", (), {"Regoin": "WEST"})
    assert "did you mean 'Region'?" in err.value.message


def test_a_view_cannot_be_planned_for_writing() -> None:
    with pytest.raises(MethodNotAllowed) as err:
        plan_write(VIEW, "DELETE", KEY, None)
    assert err.value.allow == ("GET", "HEAD")
