"""Trace events as consumers record them (`msg.trace()` sends exactly these bodies) and as admins
read them back: per message, per trace name with paging, and the list of names."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql


def trace_body(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """What the official client posts from `msg.trace({...})`."""
    return {
        "transactionId": message["transactionId"],
        "partitionId": message["partitionId"],
        "consumerGroup": message.get("consumerGroup") or "__QUEUE_MODE__",
        "traceNames": None,
        "eventType": "info",
        **fields,
    }


async def consumed_message(api: Api, payload: Any, **pop_params: Any) -> dict[str, Any]:
    queue = unique()
    await api.push(queue, [payload])
    popped = await api.pop(queue, **pop_params)
    assert popped is not None
    return popped["messages"][0]  # type: ignore[no-any-return]


async def record(api: Api, body: Any) -> dict[str, Any]:
    status, result = await api.request("POST", "/api/v1/traces", json=body)
    assert status == 201, result
    assert result["success"] is True and uuid.UUID(result["traceId"])
    return result  # type: ignore[no-any-return]


async def test_trace_round_trip_by_message_and_by_name(server: ServerProcess) -> None:
    order = unique("order")
    async with Api(server.url) as api:
        message = await consumed_message(api, {"order": order}, consumerGroup="shipping")
        first = await record(
            api,
            trace_body(message, traceNames=[order, "checkout", order], data={"step": "reserved"}),
        )
        await record(api, trace_body(message, traceNames=order, eventType="error", data=None))
        other = await consumed_message(api, {"order": "other"})
        await record(api, trace_body(other, traceNames=[order], data={"step": "refund"}))

        path = f"/api/v1/traces/{message['partitionId']}/{message['transactionId']}"
        status, of_message = await api.request("GET", path)
        assert status == 200
        traces = of_message["traces"]
        assert [t["data"] for t in traces] == [{"step": "reserved"}, None], "oldest first"
        assert traces[0]["id"] == first["traceId"]
        assert traces[0]["trace_names"] == sorted(["checkout", order])
        assert traces[1]["event_type"] == "error" and traces[1]["trace_names"] == [order]
        assert traces[0]["consumer_group"] == "shipping"
        assert traces[0]["worker_id"].isdigit() and traces[0]["created_at"].endswith("Z")

        status, named = await api.request("GET", f"/api/v1/traces/by-name/{order}")
        assert status == 200 and named["total"] == 3
        assert named["pagination"] == {"limit": 100, "offset": 0}
        timeline = named["traces"]
        assert [t["transaction_id"] for t in timeline] == [message["transactionId"]] * 2 + [
            other["transactionId"]
        ]
        assert timeline[0]["queue_name"] == message["queue"]
        assert timeline[0]["partition_name"] == "Default"
        assert timeline[0]["message_payload"] == {"order": order}
        status, second_page = await api.request(
            "GET", f"/api/v1/traces/by-name/{order}", params={"limit": 1, "offset": 2}
        )
        assert status == 200 and second_page["total"] == 3
        assert [t["data"] for t in second_page["traces"]] == [{"step": "refund"}]

        status, names = await api.request("GET", "/api/v1/traces/names", params={"search": order})
        assert status == 200 and names["total"] == 1
        [entry] = names["trace_names"]
        assert (entry["trace_name"], entry["trace_count"], entry["message_count"]) == (order, 3, 2)
        assert entry["last_seen"] == timeline[-1]["created_at"]
        status, all_names = await api.request("GET", "/api/v1/traces/names")
        assert status == 200 and all_names["total"] >= 2
        assert all_names["trace_names"][0]["trace_name"] == order, "most recently used first"


async def test_trace_names_are_percent_decoded(server: ServerProcess) -> None:
    name = f"tenant/{unique()} 50%"
    async with Api(server.url) as api:
        message = await consumed_message(api, {"x": 1})
        await record(api, trace_body(message, traceNames=[name], data={"ok": True}))
        status, named = await api.request("GET", f"/api/v1/traces/by-name/{quote(name, safe='')}")
        assert status == 200 and named["total"] == 1
        assert named["traces"][0]["trace_names"] == [name]


async def test_traces_go_with_their_message(server: ServerProcess) -> None:
    name = unique("gone")
    async with Api(server.url) as api:
        message = await consumed_message(api, {"x": 1})
        await record(api, trace_body(message, traceNames=[name], data={}))
        path = f"/api/v1/messages/{message['partitionId']}/{message['transactionId']}"
        status, _ = await api.request("DELETE", path)
        assert status == 200
        status, named = await api.request("GET", f"/api/v1/traces/by-name/{name}")
        assert status == 200 and named == {
            "traces": [],
            "total": 0,
            "pagination": {"limit": 100, "offset": 0},
        }
        status, body = await api.request(
            "GET", f"/api/v1/traces/{message['partitionId']}/{message['transactionId']}"
        )
        assert (status, body) == (404, {"error": "Message not found"})


async def test_bad_trace_input_is_refused_and_records_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    async with Api(server.url) as api:
        message = await consumed_message(api, {"x": 1})
        good = trace_body(message, data={"ok": True})
        cases: list[tuple[Any, int, str]] = [
            ({**good, "transactionId": None}, 400, "transactionId and partitionId are required"),
            ({k: v for k, v in good.items() if k != "partitionId"}, 400, "are required"),
            ({k: v for k, v in good.items() if k != "data"}, 400, "data is required"),
            ({**good, "partitionId": "nope"}, 400, "partitionId must be a UUID"),
            ({**good, "partitionId": str(uuid.uuid4())}, 404, "Message not found"),
            ({**good, "transactionId": "unknown"}, 404, "Message not found"),
            ({**good, "traceNames": ["n" * 256]}, 400, "at most 255 characters"),
            ({**good, "traceNames": [1]}, 400, "traceNames must be a string or an array"),
            ({**good, "traceNames": {"a": 1}}, 400, "traceNames must be a string or an array"),
            ({**good, "eventType": "e" * 101}, 400, "eventType must be at most 100"),
            ({**good, "eventType": 3}, 400, "eventType must be a string"),
            ({**good, "consumerGroup": "g" * 256}, 400, "consumerGroup must be at most 255"),
            ([good], 400, "must be a JSON object"),
        ]
        for body, status, error in cases:
            code, result = await api.request("POST", "/api/v1/traces", json=body)
            assert (code, error in result["error"]) == (status, True), (body, result)
        code, result = await api.request(
            "POST",
            "/api/v1/traces",
            content=b"{broken",
            headers={"content-type": "application/json"},
        )
        assert code == 400 and result["error"].startswith("Invalid JSON")

        reads: list[tuple[str, dict[str, Any], int, str]] = [
            ("/api/v1/traces/not-a-uuid/tx", {}, 400, "partitionId must be a UUID"),
            (f"/api/v1/traces/{uuid.uuid4()}/tx", {}, 404, "Message not found"),
            ("/api/v1/traces/by-name/" + "n" * 256, {}, 400, "trace name must be 1 to 255"),
            ("/api/v1/traces/by-name/x", {"limit": "-1"}, 400, "limit must be between"),
            ("/api/v1/traces/by-name/x", {"offset": "-1"}, 400, "offset must not be negative"),
            ("/api/v1/traces/by-name/x", {"from": "soon"}, 400, "from must be an ISO"),
            ("/api/v1/traces/names", {"limit": "0"}, 400, "limit must be between"),
            ("/api/v1/traces/names", {"search": "s" * 256}, 400, "search must be at most 255"),
        ]
        for path, params, status, error in reads:
            code, result = await api.request("GET", path, params=params)
            assert (code, error in result["error"]) == (status, True), (path, result)
    rows = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.message_traces WHERE transaction_id = $1",
        message["transactionId"],
        database=database,
    )
    assert rows[0]["n"] == 0
