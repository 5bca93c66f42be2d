"""10,000 messages over 10 partitions, consumed by 4 concurrent queen-mq 0.15.0 consumers."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import pytest

from tests.compat.harness import ClientRunner, script

pytestmark = pytest.mark.compat

PARTITIONS = 10
PER_PARTITION = 1000
CONSUMERS = 4


@pytest.mark.timeout(180)
def test_every_message_once_and_fifo_per_partition(
    client015: ClientRunner, queue_name: str
) -> None:
    result = client015.run(
        script("fanout_10k"),
        {
            "queue": queue_name,
            "partitions": PARTITIONS,
            "per_partition": PER_PARTITION,
            "consumers": CONSUMERS,
            "batch": 50,
            "chunk": 100,
            "deadline_s": 120,
        },
        timeout_s=150,
    )
    assert result["push_failures"] == [], result["push_failures"]
    assert result["ack_failure_count"] == 0, result["ack_failures"]

    deliveries = result["deliveries"]
    seen = Counter((p, seq) for p, seq, _, _ in deliveries)
    duplicates = sorted(key for key, n in seen.items() if n > 1)
    expected = {(p, seq) for p in range(PARTITIONS) for seq in range(PER_PARTITION)}
    missing = sorted(expected - set(seen))
    assert not missing, f"{len(missing)} messages never delivered, e.g. {missing[:10]}"
    assert not duplicates, f"{len(duplicates)} messages delivered twice, e.g. {duplicates[:10]}"
    assert result["leftover"] == 0

    order: defaultdict[int, list[int]] = defaultdict(list)
    for p, seq, partition_name, _ in deliveries:
        assert partition_name == f"p{p}", f"message of p{p} delivered as {partition_name}"
        order[p].append(seq)
    out_of_order = {
        p: next(i for i, (a, b) in enumerate(itertools.pairwise(seqs)) if a > b)
        for p, seqs in order.items()
        if seqs != sorted(seqs)
    }
    assert not out_of_order, f"FIFO broken (partition: first inversion index) {out_of_order}"

    used = sum(1 for n in result["pops_per_consumer"] if n > 0)
    assert used > 1, f"the consumers did not share the work: {result['pops_per_consumer']}"
