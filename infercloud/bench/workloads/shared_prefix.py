"""W4 shared prefix: a few long prefixes, each followed by many short questions (what a prefix cache serves).

The order is question-major (p0q0, p1q0, ..., p7q0, p0q1, ...): consecutive requests never share a
prefix, and a prefix's later questions arrive after its first one has been computed (or is being).
Asked for more requests than prefixes x questions, it adds questions to every prefix.
W5 (routing) is the same shape with 16 prefixes, each a tenant: `tenant` is set, so the requests
carry it as the OpenAI `user` field, and the order is shuffled (tenants' requests interleave at
random; in a fixed cyclic order round robin would pin prefix p to replica p mod N by accident).
Its tenants are long-lived: one extra question per tenant is marked warm-up, sent before the
measured run, so the run measures where the fleet serves each tenant from, not its first visit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from infercloud.bench.workloads.base import BenchRequest, random_token_ids


@dataclass(frozen=True)
class SharedPrefix:
    vocab_size: int
    num_prefixes: int = 8
    num_questions: int = 16
    prefix_len: int = 1024
    question_len: int = 32
    output_len: int = 32
    name: str = "W4"
    tenant_per_prefix: bool = False   # W5: prefix p is tenant-p's
    shuffle: bool = False             # W5: random order instead of question-major
    warm_each_prefix: bool = False    # W5: one more question per prefix, marked is_warmup

    @property
    def natural_size(self) -> int:
        return self.num_prefixes * self.num_questions

    def requests(self, rng: np.random.Generator, num_requests: int) -> list[BenchRequest]:
        num_questions = max(self.num_questions, math.ceil(num_requests / self.num_prefixes))
        prefixes = [random_token_ids(rng, self.prefix_len, self.vocab_size) for _ in range(self.num_prefixes)]
        questions = [[random_token_ids(rng, self.question_len, self.vocab_size) for _ in range(num_questions)]
                     for _ in range(self.num_prefixes)]
        tag = self.name.lower()
        ordered = [BenchRequest(f"{tag}-p{p}-q{q}", prefixes[p] + questions[p][q], self.output_len, prefix_index=p,
                                tenant=f"tenant-{p}" if self.tenant_per_prefix else None)
                   for q in range(num_questions) for p in range(self.num_prefixes)]
        ordered = ordered[:num_requests]
        if self.shuffle:
            ordered = [ordered[i] for i in rng.permutation(len(ordered))]
        if self.warm_each_prefix:
            warm = [BenchRequest(f"{tag}-p{p}-warm", prefixes[p] + random_token_ids(rng, self.question_len,
                                                                                    self.vocab_size),
                                 self.output_len, prefix_index=p, is_warmup=True,
                                 tenant=f"tenant-{p}" if self.tenant_per_prefix else None)
                    for p in range(self.num_prefixes)]
            ordered = warm + ordered
        return ordered


def w4_requests(vocab_size: int, num_prefixes: int = 8, num_questions: int = 16, seed: int = 0,
                prefix_len: int = 1024, question_len: int = 32, max_tokens: int = 32) -> list[BenchRequest]:
    """W4: every question of every prefix, question-major."""
    workload = SharedPrefix(vocab_size, num_prefixes, num_questions, prefix_len, question_len, max_tokens)
    return workload.requests(np.random.default_rng(seed), workload.natural_size)
