from queen.sync.siblings import MAX_DATAGRAM, _pack


def test_queue_names_share_datagrams_up_to_the_size_limit() -> None:
    names = [f"queue-{n:04d}-" + "x" * 200 for n in range(100)]
    datagrams = _pack(names)
    assert len(datagrams) > 1
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)
    assert [n for d in datagrams for n in d.decode().split("\n")] == names


def test_nothing_to_say_sends_nothing() -> None:
    assert _pack([]) == []
