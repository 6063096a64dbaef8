"""W6 interference: one long prompt arriving among live decode streams (chunked prefill, p99 ITL).

A fixed schedule rather than an arrival process: the streams are all sent at t = 0 and decode for a
long while; the long prompt is sent at `long_at_s`, when they are decoding. A scheduler without
chunked prefill stalls every stream for the whole prefill, which shows as the streams' largest
inter-token gaps (ITL p99 / max). Asked for n requests it makes n - 1 streams and the long prompt.
`long_at_s` should fall well inside the streams' decode time: raise the stream output length on a
fast server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infercloud.bench.workloads.base import BenchRequest, random_token_ids


@dataclass(frozen=True)
class Interference:
    vocab_size: int
    num_streams: int = 8
    stream_input_len: int = 128
    stream_output_len: int = 256
    long_input_len: int = 2048
    long_output_len: int = 16
    long_at_s: float = 2.0
    name: str = "W6"

    @property
    def natural_size(self) -> int:
        return self.num_streams + 1

    def requests(self, rng: np.random.Generator, num_requests: int) -> list[BenchRequest]:
        if num_requests < 1:
            return []
        streams = [BenchRequest(f"w6-stream-{i}", random_token_ids(rng, self.stream_input_len, self.vocab_size),
                                self.stream_output_len, send_offset_s=0.0)
                   for i in range(num_requests - 1)]
        long = BenchRequest("w6-long", random_token_ids(rng, self.long_input_len, self.vocab_size),
                            self.long_output_len, send_offset_s=self.long_at_s)
        return [*streams, long]
