"""SearchBatcher: concurrent single-word misses share one search and get their own answers."""

from __future__ import annotations

import asyncio

import numpy as np

from services.serving.batcher import SearchBatcher
from services.serving.translator import Translator


def test_concurrent_misses_share_one_search_with_per_request_answers(registry, planted):
    *_, en_words, _ = planted
    tr = Translator(registry)
    words = en_words[:60]
    ks = [1 + i % 7 for i in range(len(words))]

    async def run():
        founds = [tr.lookup(w, "en", "fr", k, "csls") for w, k in zip(words, ks)]
        return await asyncio.gather(*(tr.complete_async(f) for f in founds))

    bodies = asyncio.run(run())
    assert tr.batcher.queries == len(words) and tr.batcher.batches == 1
    want = [tr.translate_json(w, "en", "fr", k, "csls") for w, k in zip(words, ks)]
    assert bodies == want
    assert [len(b.split('"word":')) - 2 for b in bodies] == ks  # k translations each, not the batch's max k


def test_lone_request_is_searched_at_once_and_batches_are_capped(registry, planted):
    state = registry.ensure_csls("en", "fr")
    batcher = SearchBatcher(max_batch=8)

    async def run(n):
        return await asyncio.gather(*(batcher.search(state.index, state.mapped_source[i], 3, state.column)
                                      for i in range(n)))

    one = asyncio.run(run(1))
    assert batcher.batches == 1 and one[0][1][0] == 0  # w0 -> m0
    out = asyncio.run(run(20))
    assert batcher.batches == 1 + 3  # 8 + 8 + 4
    assert [int(rows[0]) for _, rows in out] == list(range(20))


def test_a_failing_search_fails_every_waiter():
    class Broken:
        def search(self, Q, k, column):
            raise RuntimeError("index gone")

    batcher, broken = SearchBatcher(), Broken()

    async def run():
        return await asyncio.gather(*(batcher.search(broken, np.zeros(3, np.float32), 2, None) for _ in range(5)),
                                    return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(run(), 10))
    assert len(results) == 5 and all(isinstance(r, RuntimeError) for r in results)
    assert not batcher._queues and batcher.batches == 0


def test_searches_in_flight_are_capped_per_key():
    import threading
    import time

    class Slow:
        def __init__(self):
            self.active = self.peak = 0
            self.lock = threading.Lock()

        def search(self, Q, k, column):
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(0.05)
            with self.lock:
                self.active -= 1
            return Q[:, :k].copy(), np.tile(np.arange(k), (len(Q), 1))

    index, batcher = Slow(), SearchBatcher(max_batch=4, max_concurrent=2)

    async def run():
        return await asyncio.gather(*(batcher.search(index, np.full(3, i, np.float32), 2, None) for i in range(20)))

    out = asyncio.run(asyncio.wait_for(run(), 20))
    assert index.peak == 2 and batcher.queries == 20 and batcher.batches == 5
    assert [float(scores[0]) for scores, _ in out] == list(range(20))  # each waiter got its own row
    assert not batcher._queues and not batcher._drains
