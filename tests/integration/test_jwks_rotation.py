"""JWKS rotation (issue 14, spec D-J5), with the JWKS actor and the verifier against a real HTTP
endpoint whose key set the test changes: an unknown kid triggers a background refetch and is
refused meanwhile (no request waits on the network), the new key verifies once it is in, tokens
of the removed key fail from then on, and a broken answer keeps the last good set."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.lowlevel

from queen.actors.jwks import JwksKeys
from queen.config import Config
from queen.security.tokens import Rejected, Verifier
from tests.integration import keys

pytestmark = pytest.mark.timeout(60)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - the actor offers no event to wait on
            await trio.sleep(0.01)


def bearer(key: object, kid: str) -> str:
    return "Bearer " + keys.token(key, "EdDSA", {"kid": kid})


async def test_a_rotated_key_set_replaces_the_old_one_in_the_background() -> None:
    old, new = keys.ed_key(), keys.ed_key()
    with keys.jwks_server({"keys": [keys.jwk(old, "k-old", "EdDSA")]}) as served:
        config = Config.from_env(
            {"JWT_ENABLED": "true", "JWT_ALGORITHM": "EdDSA", "JWT_JWKS_URL": served.url}
        )
        actor = JwksKeys(config, cooldown_s=0.5)
        verifier = Verifier(config, actor.snapshot, actor.request_refresh)
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            with pytest.raises(Rejected) as before_load:
                verifier.identity(bearer(old, "k-old"))
            assert before_load.value.status == 503
            await until(lambda: actor.keys is not None)
            old_token = bearer(old, "k-old")
            assert verifier.identity(old_token).sub == "alice"

            served.document = {"keys": [keys.jwk(new, "k-new", "EdDSA")]}
            served.delay_s = 1.0
            await trio.sleep(0.5)  # past the refetch cooldown, so the unknown kid may refetch
            fetches = actor.fetches
            started = trio.current_time()
            with pytest.raises(Rejected) as unknown:
                verifier.identity(bearer(new, "k-new"))
            assert (unknown.value.status, unknown.value.message) == (401, "Invalid token")
            assert verifier.identity(old_token).sub == "alice"  # still the loaded set
            assert trio.current_time() - started < 0.2  # nothing waited on the slow fetch

            await until(lambda: actor.keys is not None and actor.keys.by_kid("k-new") is not None)
            assert actor.fetches == fetches + 1
            assert verifier.identity(bearer(new, "k-new")).sub == "alice"
            with pytest.raises(Rejected):
                verifier.identity(old_token)

            served.delay_s = 0.0
            served.document = {"keys": []}
            await trio.sleep(0.5)
            with pytest.raises(Rejected):
                verifier.identity(bearer(new, "k-unknown"))
            await until(lambda: actor.fetches == fetches + 2)
            assert verifier.identity(bearer(new, "k-new")).sub == "alice"  # last good set kept
            nursery.cancel_scope.cancel()


async def test_unknown_kids_refetch_at_most_once_per_cooldown() -> None:
    key = keys.ed_key()
    with keys.jwks_server({"keys": [keys.jwk(key, "k", "EdDSA")]}) as served:
        config = Config.from_env(
            {"JWT_ENABLED": "true", "JWT_ALGORITHM": "EdDSA", "JWT_JWKS_URL": served.url}
        )
        actor = JwksKeys(config)  # the real 30 s cooldown
        verifier = Verifier(config, actor.snapshot, actor.request_refresh)
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await until(lambda: actor.keys is not None)
            for index in range(200):
                with pytest.raises(Rejected):
                    verifier.identity(bearer(key, f"forged-{index}"))
                await trio.lowlevel.checkpoint()
            await trio.sleep(0.3)  # an absence has no event: give a wrongful fetch time to show
            assert served.requests == 1
            nursery.cancel_scope.cancel()
