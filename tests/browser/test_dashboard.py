"""The dashboard in a real browser, as an operator uses it: every page opens without a console
error and shows the queue this test created with the depth PostgreSQL holds; the DLQ page's retry
button puts a message back in front of its consumers; the system page's switches turn maintenance
on and off. Each page's screenshot is saved in the test's folder (`make screenshots` copies them to
docs/dashboard/)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from queen.storage.pgcluster import PgCluster
from tests.browser.conftest import BrowserThread, WatchedPage
from tests.integration.api import unique
from tests.support import ServerProcess, run_sql, wait_until

STORED = """
    SELECT count(*) AS n FROM queen.messages m
    JOIN queen.partitions p ON p.id = m.partition_id
    JOIN queen.queues q ON q.id = p.queue_id
    WHERE q.name = $1
"""
PAGES = ("overview", "queues", "queue", "consumers", "messages", "dlq", "traces", "system")
DEAD_LETTERS = """
    SELECT count(*) AS n FROM queen.dead_letter_queue d
    JOIN queen.partitions p ON p.id = d.partition_id
    JOIN queen.queues q ON q.id = p.queue_id
    WHERE q.name = $1
"""


@dataclass(frozen=True)
class Shop:
    """A queue with messages in three partitions, one in flight, one consumed by a group, one
    dead-lettered and a trace: something for every page to show."""

    queue: str
    client: httpx.Client

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


def dead_letter_one(client: httpx.Client, queue: str, partition: str) -> dict[str, Any]:
    pushed = client.post(
        "/api/v1/push",
        json={"items": [{"queue": queue, "partition": partition, "payload": {"sku": "broken"}}]},
    )
    assert pushed.status_code == 201, pushed.text
    popped = client.get(f"/api/v1/pop/queue/{queue}/partition/{partition}?wait=false")
    message = popped.json()["messages"][0]
    acked = client.post(
        "/api/v1/ack",
        json={
            "transactionId": message["transactionId"],
            "partitionId": message["partitionId"],
            "leaseId": message["leaseId"],
            "status": "dlq",
            "error": "payment service refused the card",
        },
    )
    assert acked.json()[0]["dlq"] is True, acked.text
    return dict(message)


@pytest.fixture(scope="module")
def shop(server: ServerProcess) -> Iterator[Shop]:
    queue = unique("shop")
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        items = [
            {"queue": queue, "partition": partition, "payload": {"order": n, "region": partition}}
            for n, partition in enumerate(["eu", "eu", "eu", "us", "us", "asia", "asia"])
        ]
        assert client.post("/api/v1/push", json={"items": items}).status_code == 201
        in_flight = client.get(f"/api/v1/pop/queue/{queue}/partition/eu", params={"wait": "false"})
        assert in_flight.status_code == 200
        grouped = client.get(
            f"/api/v1/pop/queue/{queue}",
            params={"consumerGroup": "analytics", "batch": "2", "wait": "false"},
        )
        assert grouped.status_code == 200
        poisoned = dead_letter_one(client, queue, "payments")
        traced = client.post(
            "/api/v1/traces",
            json={
                "transactionId": poisoned["transactionId"],
                "partitionId": poisoned["partitionId"],
                "traceNames": [queue],
                "eventType": "error",
                "data": {"text": "card refused", "attempt": 1},
            },
        )
        assert traced.status_code == 201
        yield Shop(queue, client)


def open_page(watched: WatchedPage, url: str) -> Page:
    page = watched.page
    page.goto(url)
    page.wait_for_selector("#view[data-ready='1']")
    return page


def card(page: Page, name: str) -> str:
    return page.locator(f"[data-card='{name}'] .value").inner_text()


def test_every_page_loads_and_shows_the_queue_with_its_depth(
    *,
    server: ServerProcess,
    pg_cluster: PgCluster,
    database: str,
    shop: Shop,
    browser: BrowserThread,
    tmp_path: Path,
) -> None:
    queue = shop.queue
    stored = run_sql(pg_cluster, STORED, queue, database=database)[0]["n"]
    listed = shop.get("/api/v1/resources/queues", name=queue)["queues"][0]
    assert stored == listed["messages"]["total"] == 8
    pending = listed["messages"]["pending"]

    def shoot(name: str, page: Page) -> None:
        page.screenshot(path=tmp_path / f"{name}.png", full_page=True)

    def story(watched: WatchedPage) -> None:
        page = open_page(watched, f"{server.url}/")
        deepest = page.locator("section", has_text="Deepest queues").locator("tr", has_text=queue)
        expect(deepest.locator("td").nth(2)).to_have_text(str(pending))
        assert card(page, "queues") == "1"
        shoot("overview", page)

        page = open_page(watched, f"{server.url}/queues?search={queue[:8]}")
        cells = page.locator("tr", has_text=queue).locator("td").all_inner_texts()
        assert cells[0] == queue
        assert (cells[3], cells[4], cells[5]) == ("4", str(stored), str(pending))
        shoot("queues", page)

        page.locator("a", has_text=queue).first.click()
        page.wait_for_url(f"**/queues/{queue}")
        page.wait_for_selector("#view[data-ready='1']")
        assert (card(page, "total"), card(page, "pending")) == (str(stored), str(pending))
        partitions = page.locator("section", has_text="Partitions").locator("tbody tr")
        expect(partitions).to_have_count(4)
        expect(partitions.filter(has_text="eu")).to_contain_text("leased until")
        shoot("queue", page)

        page = open_page(watched, f"{server.url}/consumers?queue={queue}&minLag=0")
        groups = page.locator("section", has_text="Groups").locator(
            "tbody tr", has_text="analytics"
        )
        expect(groups).to_contain_text(queue)
        lagging = page.locator("section", has_text="Lagging partitions").locator("tbody tr")
        expect(lagging.filter(has_text="analytics").first).to_contain_text(queue)
        shoot("consumers", page)

        page = open_page(watched, f"{server.url}/messages?queue={queue}")
        expect(page.locator("tbody tr")).to_have_count(8)
        page.locator("tbody tr", has_text="asia").first.click()
        expect(page.locator("pre.payload")).to_contain_text('"region": "asia"')
        shoot("messages", page)

        page = open_page(watched, f"{server.url}/dlq?queue={queue}")
        page.locator("tbody tr", has_text="payment service refused the card").click()
        expect(page.locator("pre.payload")).to_contain_text('"sku": "broken"')
        shoot("dlq", page)

        page = open_page(watched, f"{server.url}/traces?name={queue}")
        expect(page.locator("pre.payload")).to_contain_text("card refused")
        shoot("traces", page)

        wait_until(
            lambda: bool(shop.get("/api/v1/analytics/worker-metrics")["workers"]),
            timeout_s=10,
            what="the worker's first metric row",
        )
        page = open_page(watched, f"{server.url}/system")
        expect(page.locator("section", has_text="This worker")).to_contain_text("healthy")
        workers = page.locator("section", has_text="Workers (last 5 minutes)").locator("tbody tr")
        expect(workers).to_have_count(1)
        shoot("system", page)

        assert watched.errors == []

    browser.run(story)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{name}.png" for name in PAGES)


def test_dlq_retry_button_puts_the_message_back(
    *,
    server: ServerProcess,
    pg_cluster: PgCluster,
    database: str,
    shop: Shop,
    browser: BrowserThread,
) -> None:
    queue = unique("retry")
    message = dead_letter_one(shop.client, queue, "Default")
    assert run_sql(pg_cluster, DEAD_LETTERS, queue, database=database)[0]["n"] == 1

    def story(watched: WatchedPage) -> None:
        page = open_page(watched, f"{server.url}/dlq?queue={queue}")
        row = page.locator("tbody tr", has_text=queue)
        expect(row).to_have_count(1)
        row.locator("button[data-action='retry']").click()
        expect(page.locator("#view")).to_contain_text("The dead-letter queue is empty.")
        assert watched.errors == []

    browser.run(story)
    assert run_sql(pg_cluster, DEAD_LETTERS, queue, database=database)[0]["n"] == 0
    again = shop.client.get(f"/api/v1/pop/queue/{queue}", params={"wait": "false"}).json()
    assert again["messages"][0]["transactionId"] == message["transactionId"]


@pytest.mark.parametrize(
    ("switch", "banner", "key"),
    [
        ("pop-maintenance", "Pop maintenance on", "popMaintenanceMode"),
        ("push-maintenance", "Push maintenance on", "maintenanceMode"),
    ],
)
def test_maintenance_switches_turn_on_and_off(
    *, server: ServerProcess, shop: Shop, browser: BrowserThread, switch: str, banner: str, key: str
) -> None:
    def story(watched: WatchedPage) -> None:
        page = open_page(watched, f"{server.url}/system")
        toggle = page.locator(f"input[name='{switch}']")
        expect(toggle).not_to_be_checked()
        toggle.click()
        expect(page.locator("#banners")).to_contain_text(banner)
        expect(page.locator(f"input[name='{switch}']")).to_be_checked()
        assert shop.get("/api/v1/system/maintenance")[key] is True
        page.locator(f"input[name='{switch}']").click()
        expect(page.locator("#banners")).not_to_contain_text(banner)
        assert shop.get("/api/v1/system/maintenance")[key] is False
        assert watched.errors == []

    browser.run(story)
