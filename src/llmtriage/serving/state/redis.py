"""The shared state of gateway replicas, in Redis (``[gateway] state_url = "redis://..."``).

Every update that must be exact across replicas is one Lua script, run atomically by Redis
with Redis's own clock: admission checks a key's budget (spend plus the reservations of its
running requests plus this request's), its requests in flight and its sliding-minute rate
window, then reserves, in one step; settling releases the reservation and charges the
spend in one step. Sessions are keys with a TTL; a response's latest score is swapped in
atomically (GETSET), so feedback is deduplicated across replicas.

While Redis is unreachable the gateway fails closed for keys with limits (503: a budget
that cannot be checked is not granted) and open for sessions (a request is routed afresh
instead of failing); keys without limits are served as usual. Spend that could not be
settled is retried on the next settle of the same key, never dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llmtriage.serving.config import ClientKey
from llmtriage.serving.guard import Refused
from llmtriage.serving.state.base import (
    Lesson,
    Pending,
    SharedState,
    Ticket,
    over_budget,
    over_rate,
    reservation_refused,
    too_many_in_flight,
)

PREFIX = "triage:"
#: How long a response's latest score (and what learning from it needs) is kept.
SCORE_TTL_S = 7 * 24 * 3600
#: The most learning updates a policy's stream keeps (replicas read it as they go).
LESSONS_KEPT = 100_000

# KEYS: budget hash, rate window zset. ARGV: budget (or -1), most_usd, max_in_flight (or
# -1), rpm (or -1), a unique member for the rate window, 1 to reserve (0: count the rate
# only), the spend to assume if Redis has none for the key (it lost its data).
# Returns {0} admitted, {1} over budget, {2, left, held} reservation refused,
# {3} concurrency, {4, wait_ms} rate.
ADMIT = """
local seeded = 0
if redis.call('HEXISTS', KEYS[1], 'spent') == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[7])
  seeded = 1
end
local budget, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_in_flight, rpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local running = tonumber(redis.call('HGET', KEYS[1], 'in_flight') or '0')
if budget >= 0 then
  if spent >= budget then return {1} end
  if spent + held + most > budget then
    return {2, tostring(budget - spent - held), tostring(held)}
  end
end
if max_in_flight >= 0 and running >= max_in_flight then return {3} end
if rpm >= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[2]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {4, tostring(tonumber(oldest[2]) + 60000 - now)}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], 61000)
end
if ARGV[6] == '0' then return {0, seeded} end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', most)
redis.call('HINCRBY', KEYS[1], 'in_flight', 1)
return {0, seeded}
"""

# KEYS: budget hash. ARGV: a spend the key has at least reached.
FLOOR = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if spent < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'spent', ARGV[1]) end
return 0
"""

# KEYS: budget hash. ARGV: reserved, spent, slots to release (0 or 1).
SETTLE = """
local held = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -tonumber(ARGV[1])))
if held < 0 then redis.call('HSET', KEYS[1], 'reserved', 0) end
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
local running = redis.call('HINCRBY', KEYS[1], 'in_flight', -tonumber(ARGV[3]))
if running < 0 then redis.call('HSET', KEYS[1], 'in_flight', 0) end
return 0
"""


def unavailable(exc: Exception) -> Refused:
    return Refused(503, f"the shared state store is unavailable ({type(exc).__name__}); "
                        "keys with limits cannot be admitted until it is back",
                   "server_error", "state_unavailable", retry_after=1.0)


class RedisState(SharedState):
    def __init__(self, url: str, session_ttl_s: float = 3600.0,
                 spent: dict[str, float] | None = None,
                 logged: Callable[[], Awaitable[dict[str, float]]] | None = None) -> None:
        """``spent``: per key, the spend in the request log; with what this replica
        charges since, it is the floor assumed for a key Redis knows nothing of (a Redis
        that lost its data); Redis's own figure wins otherwise. ``logged`` reads every
        key's spend from the (shared) request log: after such a loss the key's spend is
        raised to it, so a budget is overshot by at most the requests admitted meanwhile."""
        # A pooled connection that Redis dropped (a restart) is reconnected and the
        # command retried, so only a Redis that stays unreachable refuses requests.
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError])
        self.session_ttl_s = session_ttl_s
        self._seed = dict(spent or {})
        self._admit = self.client.register_script(ADMIT)
        self._settle = self.client.register_script(SETTLE)
        self._floor = self.client.register_script(FLOOR)
        self._logged = logged
        #: Settlements Redis did not take (it was down): key -> (reserved, spent, slots).
        self._owed: dict[str, tuple[float, float, int]] = {}
        #: This replica's name in the lesson streams, and where it has read each to.
        self._me = uuid.uuid4().hex
        self._read: dict[str, str] = {}

    @staticmethod
    def _budget_key(name: str) -> str:
        return f"{PREFIX}key:{name}"

    async def admit(self, key: ClientKey | None, most_usd: float) -> Ticket:
        if key is None:
            return Ticket(None)
        limited = (key.budget_usd, key.max_in_flight, key.requests_per_minute)
        if all(v is None for v in limited):
            return Ticket(key, 0.0, settled=True)  # nothing to hold or settle
        try:
            await self._pay_debts(key.name)
            answer = await self._admit(
                keys=[self._budget_key(key.name), f"{PREFIX}rate:{key.name}"],
                args=[-1 if key.budget_usd is None else key.budget_usd, most_usd,
                      -1 if key.max_in_flight is None else key.max_in_flight,
                      -1 if key.requests_per_minute is None else key.requests_per_minute,
                      uuid.uuid4().hex, 1,
                      repr(self._seed.get(key.name, 0.0))])
        except RedisError as exc:
            raise unavailable(exc) from None
        code = int(answer[0])
        if code == 0 and int(answer[1]) and self._logged is not None:
            await self._restore(key.name)
        if code == 1:
            raise over_budget(key)
        if code == 2:
            raise reservation_refused(key, most_usd, float(answer[1]), float(answer[2]) > 0)
        if code == 3:
            raise too_many_in_flight(key)
        if code == 4:
            raise over_rate(key, max(0.0, float(answer[1]) / 1000))
        return Ticket(key, most_usd)

    async def _restore(self, name: str) -> None:
        """Redis had no spend for the key: raise it to what the request log holds."""
        floor = (await self._logged()).get(name)
        if floor:
            try:
                await self._floor(keys=[self._budget_key(name)], args=[repr(floor)])
            except RedisError:
                pass  # the next admission seeds it again

    async def _pay_debts(self, name: str) -> None:
        owed = self._owed.pop(name, None)
        if owed is not None:
            reserved, spent, slots = owed
            await self._settle(keys=[self._budget_key(name)], args=[reserved, spent, slots])

    async def settle(self, ticket: Ticket, usd: float) -> None:
        if ticket.settled or ticket.key is None:
            ticket.settled = True
            return
        ticket.settled = True
        name = ticket.key.name
        self._seed[name] = self._seed.get(name, 0.0) + usd
        try:
            await self._settle(keys=[self._budget_key(name)], args=[ticket.reserved, usd, 1])
        except RedisError:
            reserved, spent, slots = self._owed.get(name, (0.0, 0.0, 0))
            self._owed[name] = (reserved + ticket.reserved, spent + usd, slots + 1)

    async def rate(self, key: ClientKey | None) -> None:
        if key is None or key.requests_per_minute is None:
            return
        try:
            answer = await self._admit(
                keys=[self._budget_key(key.name), f"{PREFIX}rate:{key.name}"],
                args=[-1, 0, -1, key.requests_per_minute, uuid.uuid4().hex, 0,
                      repr(self._seed.get(key.name, 0.0))])
        except RedisError as exc:
            raise unavailable(exc) from None
        if int(answer[0]) == 4:
            raise over_rate(key, max(0.0, float(answer[1]) / 1000))

    async def session(self, digest: bytes) -> str | None:
        try:
            model = await self.client.getex(f"{PREFIX}session:{digest.hex()}",
                                            ex=int(self.session_ttl_s))
        except RedisError:
            return None  # fail open: route afresh
        return model.decode() if model is not None else None

    async def stick(self, digest: bytes, model: str) -> None:
        try:
            await self.client.set(f"{PREFIX}session:{digest.hex()}", model,
                                  ex=int(self.session_ttl_s))
        except RedisError:
            pass

    async def rescore(self, ident: str, score: float) -> float | None:
        try:
            previous = await self.client.set(f"{PREFIX}score:{ident}", repr(score),
                                             ex=SCORE_TTL_S, get=True)
        except RedisError as exc:
            raise unavailable(exc) from None
        return float(previous) if previous is not None else None

    async def await_feedback(self, ident: str, pending: Pending) -> None:
        try:
            await self.client.hset(f"{PREFIX}pending:{ident}", mapping={
                "policy": pending.policy, "model": pending.model,
                "client": pending.client or "",
                "context": np.asarray(pending.context, dtype=np.float32).tobytes()})
            await self.client.expire(f"{PREFIX}pending:{ident}", SCORE_TTL_S)
        except RedisError:
            pass  # that response will not teach; nothing else is lost

    async def pending(self, ident: str) -> Pending | None:
        try:
            found = await self.client.hgetall(f"{PREFIX}pending:{ident}")
        except RedisError as exc:
            raise unavailable(exc) from None
        if not found:
            return None
        return Pending(found[b"policy"].decode(),
                       np.frombuffer(found[b"context"], dtype=np.float32),
                       found[b"model"].decode(), found[b"client"].decode() or None)

    async def teach(self, policy: str, lesson: Lesson) -> None:
        fields = {"by": self._me, "model": lesson.model, "reward": repr(lesson.reward),
                  "previous": "" if lesson.previous is None else repr(lesson.previous),
                  "context": np.asarray(lesson.context, dtype=np.float32).tobytes()}
        try:
            await self.client.xadd(f"{PREFIX}lessons:{policy}", fields, maxlen=LESSONS_KEPT,
                                   approximate=True)
        except RedisError:
            pass  # the other replicas miss this one update; this replica has it

    async def lessons(self, policy: str) -> list[Lesson]:
        stream = f"{PREFIX}lessons:{policy}"
        try:
            if policy not in self._read:  # start from now: the log replay covers the past
                last = await self.client.xrevrange(stream, count=1)
                self._read[policy] = last[0][0].decode() if last else "0-0"
                return []
            found = await self.client.xread({stream: self._read[policy]}, count=10_000)
        except RedisError:
            return []  # learn them later
        lessons = []
        for _, entries in found:
            for entry_id, fields in entries:
                self._read[policy] = entry_id.decode()
                if fields[b"by"].decode() == self._me:
                    continue
                previous = fields[b"previous"].decode()
                lessons.append(Lesson(np.frombuffer(fields[b"context"], dtype=np.float32),
                                      fields[b"model"].decode(),
                                      float(fields[b"reward"]),
                                      float(previous) if previous else None))
        return lessons

    async def circuits(self, open_here: dict[str, float]) -> dict[str, float]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for model, seconds in open_here.items():
                    pipe.set(f"{PREFIX}circuit:{model}", "open",
                             px=max(1, int(seconds * 1000)), nx=True)
                await pipe.execute()
            found = {}
            async for key in self.client.scan_iter(match=f"{PREFIX}circuit:*", count=100):
                left = await self.client.pttl(key)
                if left > 0:
                    found[key.decode()[len(f"{PREFIX}circuit:"):]] = left / 1000
            return found
        except RedisError:
            return {}  # each replica goes on with its own breakers

    async def aclose(self) -> None:
        await self.client.aclose()
