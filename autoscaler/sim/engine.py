"""One simulated replica: a continuous-batching engine (vLLM V1-like) advanced in engine steps.

Model (per step, see `EngineProfile.step_s`):

* The scheduler first admits waiting requests FCFS while fewer than `max_num_seqs` are running and
  the KV cache has room for the request's whole prompt (its prompt plus already generated tokens
  after a preemption) besides the decode batch's next token; the head of the queue blocks the
  rest (no skipping).
* One step decodes one token for every decoding sequence and prefills up to
  `max_num_batched_tokens - batch` prompt tokens, FCFS across admitted requests (chunked prefill).
  A request's first token comes at the end of the step that finishes its prompt.
* Every decoding sequence adds one token to the KV cache per step. When the next step would not
  fit, the most recently admitted request is preempted (vLLM V1 recompute mode): its KV is freed
  and it goes back to the front of the queue, to prefill prompt + generated tokens again.

Speed: no per-token events. While only decoding, the replica jumps straight to the next event
(a completion, the KV cache filling, or the caller's time limit) in one "macro step" of many
engine steps with the same batch; prefill steps run one by one (there are at most a few per
request). Step time is held for a macro step of at most `MAX_MACRO` steps (the KV term grows by
batch x per-token cost per step, well under 1 % over a macro step).
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque
from heapq import heappop, heappush

__all__ = ["Request", "Replica", "TTFT_BUCKETS"]

MAX_MACRO = 64

# vLLM's buckets for vllm:time_to_first_token_seconds (vllm/v1/metrics/loggers.py)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)


class Request:
    __slots__ = ("rid", "arrival", "prompt", "output", "gen", "rem", "kv_res", "join", "epoch", "first")

    def __init__(self, rid: int, arrival: float, prompt: int, output: int):
        self.rid = rid
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.gen = 0          # tokens generated before the current admission (preemptions)
        self.rem = 0          # prompt tokens still to prefill in the current admission
        self.kv_res = 0       # KV tokens reserved at admission (prompt + gen)
        self.join = 0         # decode counter - 1 when it joined the decode batch
        self.epoch = 0        # bumps on preemption; stale heap entries are skipped
        self.first = -1.0     # time of the first token


class Replica:
    """A replica's engine. `advance(t)` runs every step that starts at or before `t`."""

    __slots__ = ("idx", "base", "per_seq", "per_kv", "inv_ptps", "max_seqs", "budget", "kv_cap", "t", "waiting",
                 "prefill", "dec", "admitted", "D", "B", "join_sum", "kv_static", "pf_rem", "busy_s", "gen_tokens",
                 "preemptions", "completed", "prompt_tokens_done", "first_out", "done_out", "hist", "state", "gpu_start", "gpu_end",
                 "created", "ready_at", "busy_mark", "node", "tier", "gone_at")

    def __init__(self, idx: int, profile, first_out, done_out, hist: list[int]):
        e = profile.engine
        self.idx = idx
        self.base = e.step_base_s
        self.per_seq = e.step_per_seq_s
        self.per_kv = e.step_per_kv_token_s
        self.inv_ptps = 1.0 / e.prefill_tokens_per_s
        self.max_seqs = e.max_num_seqs
        self.budget = e.max_num_batched_tokens
        self.kv_cap = e.kv_cache_tokens
        self.t = 0.0                      # start of the next step
        self.waiting: deque[Request] = deque()
        self.prefill: deque[Request] = deque()
        self.dec: list = []               # heap of (finish counter, rid, epoch, request)
        self.admitted: dict[Request, None] = {}   # admission order (preemption takes the last)
        self.D = 0                        # decode steps run
        self.B = 0                        # decoding sequences
        self.join_sum = 0                 # sum of `join` over decoding sequences
        self.kv_static = 0                # KV reserved at admission by admitted requests
        self.pf_rem = 0                   # prompt tokens reserved but not yet prefilled
        self.busy_s = 0.0
        self.gen_tokens = 0
        self.preemptions = 0
        self.completed = 0
        self.prompt_tokens_done = 0       # vllm:prompt_tokens_total: counted when a prefill completes
        self.first_out = first_out        # array-likes indexed by rid: first-token and completion times
        self.done_out = done_out
        self.hist = hist                  # TTFT histogram counts (len(TTFT_BUCKETS) + 1), shared per model
        # lifecycle, managed by the simulator
        self.state = "pending"
        self.gpu_start = -1.0
        self.gpu_end = -1.0
        self.created = 0.0
        self.ready_at = -1.0
        self.busy_mark = 0.0
        self.node = None                  # with SimConfig.nodes: the node it runs on, the tier its start paid
        self.tier = None
        self.gone_at = -1.0               # when it left its model's fleet (scaled down; asleep engines sleep from here)

    # ------------------------------------------------------------------ queries
    def idle(self) -> bool:
        return not (self.B or self.prefill or self.waiting)

    def kv_used(self) -> int:
        return self.kv_static + self.B * self.D - self.join_sum

    def num_waiting(self) -> int:
        return len(self.waiting)

    def num_running(self) -> int:
        return len(self.admitted)

    def in_flight(self) -> int:
        return len(self.waiting) + len(self.admitted)

    # ------------------------------------------------------------------ input
    def add(self, req: Request, now: float) -> None:
        """Queue `req` at time `now`; call `advance(now)` first."""
        if not (self.B or self.prefill or self.waiting) and self.t < now:
            self.t = now
        self.waiting.append(req)

    # ------------------------------------------------------------------ engine
    def advance(self, t_limit: float) -> None:
        """Run every engine step that starts at or before `t_limit`."""
        while self.t <= t_limit:
            if self.waiting:
                self._admit()
            if self.prefill:
                self._mixed_step()
            elif self.B:
                self._decode_macro(t_limit)
            else:
                return

    def _admit(self) -> None:
        w = self.waiting
        # keep room for the decode batch's next token, so that admitting never forces a preemption
        free = self.kv_cap - (self.kv_static + self.B * self.D - self.join_sum) - self.B
        n = len(self.admitted)
        admitted = self.admitted
        pf = self.prefill
        while w and n < self.max_seqs:
            r = w[0]
            need = r.prompt + r.gen
            if need > free:
                break
            w.popleft()
            r.kv_res = need
            r.rem = need
            free -= need
            self.kv_static += need
            self.pf_rem += need
            n += 1
            admitted[r] = None
            pf.append(r)

    def _preempt_for(self, need: int) -> None:
        """Preempt the most recently admitted requests until `need` KV tokens are free."""
        admitted = self.admitted
        while admitted and self.kv_cap - (self.kv_static + self.B * self.D - self.join_sum) < need:
            r = next(reversed(admitted))
            del admitted[r]
            self.kv_static -= r.kv_res
            if r.rem > 0:
                self.prefill.remove(r)
                self.pf_rem -= r.rem
            else:
                r.gen += self.D - r.join
                self.B -= 1
                self.join_sum -= r.join
                r.epoch += 1
            r.rem = 0
            self.preemptions += 1
            self.waiting.appendleft(r)
            need = self.B   # the batch shrank: it needs fewer new slots

    def _mixed_step(self) -> None:
        B = self.B
        if B and self.kv_cap - (self.kv_static + B * self.D - self.join_sum) < B:
            self._preempt_for(B)
            B = self.B
            if not self.prefill:
                return
        # attention reads the tokens already in the cache (not the reserved, unprefilled ones)
        kv = self.kv_static + B * self.D - self.join_sum - self.pf_rem
        room = self.budget - B
        tokens = 0
        ndone = 0
        for r in self.prefill:
            take = r.rem
            if take > room - tokens:
                take = room - tokens
            tokens += take
            r.rem -= take
            if r.rem:
                break
            ndone += 1
            if tokens >= room:
                break
        self.pf_rem -= tokens
        dt = self.base + self.per_seq * B + self.per_kv * kv + tokens * self.inv_ptps
        t_end = self.t + dt
        self.t = t_end
        self.busy_s += dt
        if B:
            self.D += 1
            self.gen_tokens += B
            self._complete_due(t_end)
        if ndone:
            pf = self.prefill
            D = self.D
            dec = self.dec
            hist = self.hist
            for _ in range(ndone):
                r = pf.popleft()
                self.gen_tokens += 1
                if r.first < 0:
                    self.prompt_tokens_done += r.prompt
                    r.first = t_end
                    self.first_out[r.rid] = t_end
                    hist[bisect_left(TTFT_BUCKETS, t_end - r.arrival)] += 1
                left = r.output - r.gen - 1
                if left <= 0:
                    del self.admitted[r]
                    self.kv_static -= r.kv_res
                    self.done_out[r.rid] = t_end
                    self.completed += 1
                    continue
                r.join = D - 1
                self.B += 1
                self.join_sum += D - 1
                heappush(dec, (D + left, r.rid, r.epoch, r))

    def _complete_due(self, t_end: float) -> None:
        dec = self.dec
        D = self.D
        while dec and dec[0][0] <= D:
            _, _, epoch, r = heappop(dec)
            if epoch != r.epoch:
                continue
            del self.admitted[r]
            self.kv_static -= r.kv_res
            self.B -= 1
            self.join_sum -= r.join
            self.done_out[r.rid] = t_end
            self.completed += 1

    def _decode_macro(self, t_limit: float) -> None:
        B = self.B
        D = self.D
        kv = self.kv_static + B * D - self.join_sum
        free = self.kv_cap - kv
        if free < B:
            self._preempt_for(B)
            return
        dec = self.dec
        while dec[0][2] != dec[0][3].epoch:
            heappop(dec)
        s = self.base + self.per_seq * B + self.per_kv * kv
        m = dec[0][0] - D
        n = int((t_limit - self.t) / s) + 1
        if n < m:
            m = n
        n = free // B
        if n < m:
            m = n
        if m > MAX_MACRO:
            m = MAX_MACRO
        self.D = D + m
        dt = m * s
        self.t += dt
        self.busy_s += dt
        self.gen_tokens += m * B
        if dec[0][0] <= D + m:
            self._complete_due(self.t)
