"""Consumer-group administration as an operator uses it over HTTP (spec §4.9): independent groups,
replaying one group from a point in time, skipping a backlog, starting a group over, moving a
subscription, and finding groups that fall behind."""

from __future__ import annotations

from typing import Any

import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql

GROUPS = "/api/v1/consumer-groups"
LONG_NAME = "g" * 256


def group_params(group: str | None, **extra: Any) -> dict[str, Any]:
    return {**extra, **({"consumerGroup": group} if group else {})}


async def drain(
    api: Api, queue: str, group: str | None = None, partition: str | None = None, **params: Any
) -> list[Any]:
    """Pop and ack until the group has nothing left; payloads in delivery order. The final empty
    wildcard pop leaves the (queue, group) watermark row behind, as a caught-up consumer does."""
    seen: list[Any] = []
    with trio.fail_after(30):
        while popped := await api.pop(queue, partition, **group_params(group, batch=100, **params)):
            await api.ack_batch(popped["messages"], group=group)
            seen.extend(m["data"] for m in popped["messages"])
    return seen


def watermark_groups(pg_cluster: PgCluster, database: str, queue: str) -> set[str]:
    rows = run_sql(
        pg_cluster,
        "SELECT consumer_group FROM queen.consumer_watermarks WHERE queue_name = $1",
        queue,
        database=database,
    )
    return {row["consumer_group"] for row in rows}


async def list_entry(api: Api, group: str, queue: str) -> dict[str, Any] | None:
    status, groups = await api.request("GET", GROUPS)
    assert status == 200 and isinstance(groups, list)
    matches = [g for g in groups if g["name"] == group and g["queueName"] == queue]
    assert len(matches) <= 1
    return matches[0] if matches else None


def steady(report: Any) -> Any:
    """A report without the figures that grow by themselves as the clock ticks."""
    if isinstance(report, dict):
        return {
            key: steady(value)
            for key, value in report.items()
            if key not in ("timeLagSeconds", "maxTimeLag")
        }
    return report


async def partitions_of(api: Api, group: str, queue: str) -> dict[str, dict[str, Any]]:
    status, detail = await api.request("GET", f"{GROUPS}/{group}")
    assert status == 200
    return {p["partition"]: p for p in detail.get(queue, {"partitions": []})["partitions"]}


async def test_every_group_sees_every_message_and_reports_its_own_lag(
    server: ServerProcess,
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": n} for n in range(3)], partition="a")
        await api.push(queue, [{"n": n} for n in range(3, 5)], partition="b")
        assert sorted(m["n"] for m in await drain(api, queue, "billing")) == [0, 1, 2, 3, 4]
        assert sorted(m["n"] for m in await drain(api, queue)) == [0, 1, 2, 3, 4]
        partial = await api.pop(queue, "a", consumerGroup="audit", batch=1)
        assert partial is not None and partial["messages"][0]["data"] == {"n": 0}
        await api.ack_batch(partial["messages"], group="audit")

        billing = await list_entry(api, "billing", queue)
        assert billing == {
            "name": "billing",
            "topics": [queue],
            "queueName": queue,
            "members": 2,
            "partitionsWithLag": 0,
            "totalLag": None,
            "maxTimeLag": 0,
            "state": "Stable",
            "subscriptionMode": None,
            "subscriptionTimestamp": None,
            "subscriptionCreatedAt": None,
        }
        queue_mode = await list_entry(api, "__QUEUE_MODE__", queue)
        assert queue_mode is not None and queue_mode["members"] == 2
        audit = await list_entry(api, "audit", queue)
        assert audit is not None
        assert (audit["members"], audit["partitionsWithLag"], audit["state"]) == (1, 1, "Stable")
        assert 0 <= audit["maxTimeLag"] < 300

        status, detail = await api.request("GET", f"{GROUPS}/audit")
        assert status == 200
        [row] = detail[queue]["partitions"]
        assert row["partition"] == "a" and row["totalConsumed"] == 1 and row["offsetLag"] == 2
        assert row["leaseActive"] is False and row["lastConsumedAt"].endswith("Z")
        assert isinstance(row["timeLagSeconds"], int) and "workerId" in row
        billing_rows = await partitions_of(api, "billing", queue)
        assert {name: p["offsetLag"] for name, p in billing_rows.items()} == {"a": 0, "b": 0}

        held = await api.pop(queue, "a", consumerGroup="audit", batch=1)
        assert held is not None
        leased = (await partitions_of(api, "audit", queue))["a"]
        assert leased["leaseActive"] is True and leased["workerId"] == held["leaseId"]

        status, unknown = await api.request("GET", f"{GROUPS}/{unique('nobody')}")
        assert (status, unknown) == (200, {})


async def test_seek_to_a_timestamp_replays_one_group_and_leaves_the_others(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"batch": 1, "n": 0}, {"batch": 1, "n": 1}])
        await api.push(queue, [{"batch": 2, "n": 2}, {"batch": 2, "n": 3}])
        first = await api.pop(queue, consumerGroup="replayer", batch=3)
        assert first is not None
        second_push_at = first["messages"][2]["createdAt"]
        await api.ack_batch(first["messages"], group="replayer")
        assert len(await drain(api, queue, "replayer")) == 1
        assert len(await drain(api, queue, "bystander")) == 4
        assert watermark_groups(pg_cluster, database, queue) == {"replayer", "bystander"}

        status, body = await api.request(
            "POST", f"{GROUPS}/replayer/queues/{queue}/seek", json={"timestamp": second_push_at}
        )
        assert status == 200, body
        assert body == {
            "success": True,
            "consumerGroup": "replayer",
            "queueName": queue,
            "seekToEnd": False,
            "targetTimestamp": second_push_at[:23] + "Z",
            "partitionsUpdated": 1,
        }
        assert watermark_groups(pg_cluster, database, queue) == {"bystander"}
        replayed = await drain(api, queue, "replayer")
        assert [m["n"] for m in replayed] == [2, 3], "messages created at or after T come back"
        assert await drain(api, queue, "bystander") == [], "other groups are not moved"

        status, body = await api.request(
            "POST", f"{GROUPS}/replayer/queues/{queue}/seek", json={"timestamp": "2000-01-01"}
        )
        assert status == 200 and body["targetTimestamp"] == "2000-01-01T00:00:00.000Z"
        assert [m["n"] for m in await drain(api, queue, "replayer")] == [0, 1, 2, 3]


async def test_seek_releases_the_groups_lease_and_replays_queue_mode(
    server: ServerProcess,
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 0}, {"n": 1}])
        assert len(await drain(api, queue)) == 2
        other = await api.pop(queue, consumerGroup="other", batch=10)
        assert other is not None
        await api.push(queue, [{"n": 2}])
        held = await api.pop(queue, batch=10)
        assert held is not None and [m["data"]["n"] for m in held["messages"]] == [2]

        status, body = await api.request(
            "POST",
            f"{GROUPS}/__QUEUE_MODE__/queues/{queue}/seek",
            json={"timestamp": "1970-01-01T00:00:00Z", "toEnd": False},
        )
        assert status == 200 and body["partitionsUpdated"] == 1
        again = await api.pop(queue, batch=10)
        assert again is not None, "the seek released the lease at once"
        assert [m["data"]["n"] for m in again["messages"]] == [0, 1, 2]
        late = await api.ack(held["messages"][0])
        assert late["success"] is False and late["error"] == "Invalid or expired lease"
        await api.ack_batch(again["messages"])
        still = (await partitions_of(api, "other", queue))["Default"]
        assert still["leaseActive"] is True and still["workerId"] == other["leaseId"]


async def test_seek_to_end_skips_the_backlog(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": n} for n in range(5)], partition="a")
        await api.push(queue, [{"n": 10}], partition="b")
        await api.push(queue, [{"n": 20}], partition="untouched")
        held = await api.pop(queue, "a", consumerGroup="skipper", batch=1)
        assert held is not None
        assert await api.pop(queue, "b", consumerGroup="skipper") is not None
        assert len(await drain(api, queue, "keeper")) == 7

        status, body = await api.request(
            "POST", f"{GROUPS}/skipper/queues/{queue}/seek", json={"toEnd": True, "timestamp": 1}
        )
        assert status == 200, body
        assert body["seekToEnd"] is True and body["targetTimestamp"] is None
        assert body["partitionsUpdated"] == 2, "only partitions the group has a position on"
        rows = await partitions_of(api, "skipper", queue)
        assert {name: (p["offsetLag"], p["leaseActive"]) for name, p in rows.items()} == {
            "a": (0, False),
            "b": (0, False),
        }
        assert [m["n"] for m in await drain(api, queue, "skipper")] == [20]

        await api.push(queue, [{"n": 5}], partition="a")
        assert [m["n"] for m in await drain(api, queue, "skipper")] == [5]
        assert [m["n"] for m in await drain(api, queue, "keeper")] == [5]


async def test_partition_seek_skips_one_partition_to_its_end(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": n} for n in range(3)], partition="hot")
        await api.push(queue, [{"n": 9}], partition="cold")
        held = await api.pop(queue, "hot", consumerGroup="ops", batch=1)
        assert held is not None
        newest = await api.pop(queue, "hot", consumerGroup="peek", batch=10)
        assert newest is not None
        assert await api.pop(queue, "cold", consumerGroup="ops") is not None

        status, body = await api.request("POST", f"{GROUPS}/ops/queues/{queue}/partitions/hot/seek")
        assert status == 200, body
        assert body == {
            "success": True,
            "consumerGroup": "ops",
            "queueName": queue,
            "partitionName": "hot",
            "updated": True,
            "cursorMovedTo": newest["messages"][-1]["createdAt"][:23] + "Z",
        }
        assert await api.pop(queue, "hot", consumerGroup="ops") is None
        rows = await partitions_of(api, "ops", queue)
        assert rows["hot"]["leaseActive"] is False and rows["cold"]["leaseActive"] is True
        assert (await partitions_of(api, "peek", queue))["hot"]["leaseActive"] is True

        status, body = await api.request(
            "POST", f"{GROUPS}/ops/queues/{queue}/partitions/nowhere/seek"
        )
        assert (status, body) == (404, {"success": False, "error": "Partition not found"})
        status, body = await api.request(
            "POST", f"{GROUPS}/stranger/queues/{queue}/partitions/hot/seek"
        )
        assert status == 404 and body["success"] is False and "no position" in body["error"]


async def test_deleting_a_group_makes_it_start_over(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue, elsewhere = unique(), unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 0}], partition="a")
        await api.push(queue, [{"n": 1}], partition="b")
        await api.push(elsewhere, [{"n": 7}])
        for group in ("restart", "steady"):
            assert len(await drain(api, queue, group)) == 2
            assert len(await drain(api, elsewhere, group)) == 1
        assert watermark_groups(pg_cluster, database, queue) == {"restart", "steady"}

        status, body = await api.request("DELETE", f"{GROUPS}/restart/queues/{queue}")
        assert status == 200
        assert body == {
            "success": True,
            "consumerGroup": "restart",
            "queueName": queue,
            "deletedPartitions": 2,
            "metadataDeleted": True,
        }
        assert watermark_groups(pg_cluster, database, queue) == {"steady"}
        assert await list_entry(api, "restart", queue) is None
        assert sorted(m["n"] for m in await drain(api, queue, "restart")) == [0, 1]
        assert await drain(api, elsewhere, "restart") == [], "other queues keep their position"

        status, body = await api.request("DELETE", f"{GROUPS}/restart")
        assert status == 200
        assert body == {
            "success": True,
            "consumerGroup": "restart",
            "deletedPartitions": 3,
            "metadataDeleted": True,
        }
        assert sorted(m["n"] for m in await drain(api, queue, "restart")) == [0, 1]
        assert [m["n"] for m in await drain(api, elsewhere, "restart")] == [7]
        assert await drain(api, queue, "steady") == [], "the other group is untouched"

        status, body = await api.request("DELETE", f"{GROUPS}/{unique('never')}")
        assert status == 200 and body["deletedPartitions"] == 0


async def test_delete_keeps_or_drops_the_subscription_on_request(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 0}])
        assert await api.pop(queue, consumerGroup="late", subscriptionMode="new") is None
        await api.push(queue, [{"n": 1}])
        assert [m["n"] for m in await drain(api, queue, "late")] == [1]

        status, body = await api.request(
            "DELETE", f"{GROUPS}/late", params={"deleteMetadata": "false"}
        )
        assert status == 200 and body["metadataDeleted"] is False
        assert body["deletedPartitions"] == 1
        assert [m["n"] for m in await drain(api, queue, "late")] == [1], (
            "kept metadata: the group restarts at its subscription time, not the beginning"
        )
        entry = await list_entry(api, "late", queue)
        assert entry is not None and entry["subscriptionMode"] == "new"

        status, body = await api.request("DELETE", f"{GROUPS}/late", params={"deleteMetadata": "1"})
        assert status == 200 and body["metadataDeleted"] is True
        assert [m["n"] for m in await drain(api, queue, "late")] == [0, 1]
        entry = await list_entry(api, "late", queue)
        assert entry is not None and entry["subscriptionMode"] is None


async def test_subscription_update_moves_where_unread_partitions_start(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"p": "a", "n": 0}, {"p": "a", "n": 1}], partition="a")
        assert await api.pop(queue, consumerGroup="tail", subscriptionMode="new") is None
        assert list(await partitions_of(api, "tail", queue)) == ["a"]
        entry = await list_entry(api, "tail", queue)
        assert entry is not None and entry["subscriptionMode"] == "new"
        assert entry["subscriptionTimestamp"].endswith("Z")
        assert watermark_groups(pg_cluster, database, queue) == {"tail"}
        await api.push(queue, [{"p": "b", "n": 0}], partition="b")
        await api.push(queue, [{"p": "b", "n": 1}], partition="b")
        observed = await api.pop(queue, "b", consumerGroup="observer", batch=10)
        assert observed is not None and len(observed["messages"]) == 2
        second_at = observed["messages"][1]["createdAt"]

        status, body = await api.request(
            "POST", f"{GROUPS}/tail/subscription", json={"subscriptionTimestamp": "1999-12-31"}
        )
        assert status == 200, body
        assert body == {
            "success": True,
            "consumerGroup": "tail",
            "newTimestamp": "1999-12-31T00:00:00.000Z",
            "rowsUpdated": 1,
        }
        assert watermark_groups(pg_cluster, database, queue) == set()
        entry = await list_entry(api, "tail", queue)
        assert entry is not None and entry["subscriptionTimestamp"] == "1999-12-31T00:00:00.000Z"
        assert await drain(api, queue, "tail", partition="a") == [], (
            "a partition the group has read keeps its cursor"
        )

        status, body = await api.request(
            "POST", f"{GROUPS}/tail/subscription", json={"subscriptionTimestamp": second_at}
        )
        assert status == 200 and body["rowsUpdated"] == 1
        assert await drain(api, queue, "tail") == [{"p": "b", "n": 1}], (
            "an unread partition starts at the subscription time"
        )

        status, body = await api.request(
            "POST",
            f"{GROUPS}/{unique('nometa')}/subscription",
            json={"subscriptionTimestamp": "2030-01-01T00:00:00+02:00"},
        )
        assert status == 200 and body["rowsUpdated"] == 0
        assert body["newTimestamp"] == "2029-12-31T22:00:00.000Z"


async def test_lagging_lists_groups_that_fall_behind(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 0}, {"n": 1}, {"n": 2}])
        assert len(await drain(api, queue, "fast")) == 3
        slow = await api.pop(queue, consumerGroup="slow", batch=1)
        assert slow is not None
        await api.ack_batch(slow["messages"], group="slow")

        async def lagging(**params: Any) -> list[dict[str, Any]]:
            status, body = await api.request("GET", f"{GROUPS}/lagging", params=params)
            assert status == 200 and isinstance(body, list)
            return [row for row in body if row["queue_name"] == queue]

        [row] = await lagging(minLagSeconds=0)
        assert row["consumer_group"] == "slow" and row["partition_name"] == "Default"
        assert row["partition_id"] == slow["partitionId"] and row["offset_lag"] == 2
        assert row["worker_id"] is None and row["last_consumed_at"].endswith("Z")
        assert row["oldest_unconsumed_at"].endswith("Z") and row["time_lag_seconds"] >= 0
        assert await lagging() == [], "the default threshold is an hour"

        run_sql(
            pg_cluster,
            "UPDATE queen.messages SET created_at = created_at - interval '2 hours' "
            "WHERE partition_id = $1",
            slow["partitionId"],
            database=database,
        )
        [row] = await lagging()
        assert row["consumer_group"] == "slow" and 7200 <= row["time_lag_seconds"] < 7300
        assert row["lag_hours"] == round(row["time_lag_seconds"] / 3600, 2)
        [row] = await lagging(minLagSeconds=60)
        assert row["consumer_group"] == "slow"
        entry = await list_entry(api, "slow", queue)
        assert entry is not None and entry["state"] == "Lagging" and entry["maxTimeLag"] >= 7200
        fast = await list_entry(api, "fast", queue)
        assert fast is not None and fast["state"] == "Stable" and fast["maxTimeLag"] == 0


async def test_bad_input_is_rejected_and_changes_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 0}, {"n": 1}])
        assert await api.pop(queue, consumerGroup="guarded", subscriptionMode="new") is None
        await api.push(queue, [{"n": 2}])
        held = await api.pop(queue, consumerGroup="guarded", batch=1)
        assert held is not None
        assert len(await drain(api, queue, "witness")) == 3
        before_detail = await partitions_of(api, "guarded", queue)
        before_list = await list_entry(api, "guarded", queue)
        before_marks = watermark_groups(pg_cluster, database, queue)

        seek = f"{GROUPS}/guarded/queues/{queue}/seek"
        rejected: list[tuple[str, str, dict[str, Any], str]] = [
            ("GET", f"{GROUPS}/lagging?minLagSeconds=-5", {}, "minLagSeconds"),
            ("GET", f"{GROUPS}/lagging?minLagSeconds=soon", {}, "minLagSeconds"),
            ("GET", f"{GROUPS}/{LONG_NAME}", {}, "consumerGroup"),
            ("DELETE", f"{GROUPS}/{LONG_NAME}", {}, "consumerGroup"),
            ("DELETE", f"{GROUPS}/guarded?deleteMetadata=maybe", {}, "deleteMetadata"),
            ("DELETE", f"{GROUPS}/guarded/queues/{LONG_NAME}", {}, "queue"),
            ("DELETE", f"{GROUPS}/guarded/queues/{queue}?deleteMetadata=no", {}, "deleteMetadata"),
            ("POST", seek, {}, "Must specify either 'toEnd': true or 'timestamp'"),
            ("POST", seek, {"json": {}}, "Must specify either 'toEnd': true or 'timestamp'"),
            ("POST", seek, {"json": {"toEnd": False}}, "Must specify either"),
            ("POST", seek, {"json": {"toEnd": "yes"}}, "toEnd"),
            ("POST", seek, {"json": {"timestamp": "yesterday"}}, "timestamp"),
            ("POST", seek, {"json": {"timestamp": 1700000000}}, "timestamp"),
            ("POST", seek, {"json": {"timestamp": "2025-13-45T99:00:00Z"}}, "timestamp"),
            ("POST", seek, {"json": ["toEnd"]}, "JSON object"),
            (
                "POST",
                seek,
                {"content": b"{not json", "headers": {"content-type": "application/json"}},
                "Invalid JSON",
            ),
            (
                "POST",
                f"{GROUPS}/{LONG_NAME}/queues/{queue}/seek",
                {"json": {"toEnd": True}},
                "consumerGroup",
            ),
            (
                "POST",
                f"{GROUPS}/guarded/queues/{LONG_NAME}/seek",
                {"json": {"toEnd": True}},
                "queue",
            ),
            (
                "POST",
                f"{GROUPS}/guarded/queues/{queue}/partitions/{LONG_NAME}/seek",
                {},
                "partition",
            ),
            (
                "POST",
                f"{GROUPS}/guarded/subscription",
                {},
                "Missing subscriptionTimestamp in request body",
            ),
            (
                "POST",
                f"{GROUPS}/guarded/subscription",
                {"json": {"subscriptionTimestamp": ""}},
                "Missing subscriptionTimestamp",
            ),
            (
                "POST",
                f"{GROUPS}/guarded/subscription",
                {"json": {"subscriptionTimestamp": "later"}},
                "subscriptionTimestamp",
            ),
            (
                "POST",
                f"{GROUPS}/guarded/subscription",
                {"json": {"subscriptionTimestamp": 5}},
                "subscriptionTimestamp",
            ),
            (
                "POST",
                f"{GROUPS}/{LONG_NAME}/subscription",
                {"json": {"subscriptionTimestamp": "2020-01-01"}},
                "consumerGroup",
            ),
        ]
        for method, path, kwargs, expected in rejected:
            status, body = await api.request(method, path, **kwargs)
            assert status == 400, (method, path, kwargs, status, body)
            assert isinstance(body, dict) and expected in body["error"], (path, body)

        not_found = [
            (f"{GROUPS}/guarded/queues/{unique('missing')}/seek", "Queue not found"),
            (f"{GROUPS}/{unique('stranger')}/queues/{queue}/seek", "no position on this queue"),
        ]
        for path, expected in not_found:
            status, body = await api.request("POST", path, json={"toEnd": True})
            assert status == 404 and body["success"] is False and expected in body["error"]

        after_detail = await partitions_of(api, "guarded", queue)
        assert steady(after_detail) == steady(before_detail)
        assert after_detail["Default"]["leaseActive"] is True
        assert steady(await list_entry(api, "guarded", queue)) == steady(before_list)
        assert watermark_groups(pg_cluster, database, queue) == before_marks
        result = await api.ack(held["messages"][0])
        assert result["success"] is True, "the lease survived every rejected request"
