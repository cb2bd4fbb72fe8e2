"""The metering API's shapes as /openapi.json documents them."""

from __future__ import annotations

SHAPES = ["MeterCreate", "MeterUpdate", "MeterFilter", "MeterRead", "MeterCreated", "QueryBody", "QueryResult",
          "QueryRow", "EventRead", "RejectedRead", "IngestSummary", "IngestError"]


async def test_every_field_of_the_metering_shapes_and_query_parameters_is_described(anon):
    document = (await anon.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    bare = [f"{shape}.{name}" for shape in SHAPES for name, field in schemas[shape]["properties"].items()
            if not field.get("description")]
    query = document["paths"]["/v1/meters/{meter_key}/query"]["get"]["parameters"]
    bare += [f"query {p['name']}" for p in query if p["in"] == "query" and not p.get("description")]
    assert bare == []
