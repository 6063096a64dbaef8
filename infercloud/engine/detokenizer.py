"""IncrementalDetokenizer: token ids -> text as they arrive, right across split multi-byte characters.

Text comes from the `tokenizers` DecodeStream, which holds back bytes until they form whole UTF-8
characters. Stop strings are searched in the new text (plus enough of the old to catch one that
straddles a boundary); on a match the text is cut just before it. While a request runs, the last
(longest stop string - 1) characters are held back from the stream, so a client never receives the
start of a stop string that is then cut: the concatenated deltas always equal the final text.
"""

from __future__ import annotations

from tokenizers import Tokenizer as HFTokenizer
from tokenizers.decoders import DecodeStream

from infercloud.engine.sampling import SamplingParams

_CONTEXT_TOKENS = 4  # prompt tail given to the stream, so the first piece decodes in context


class IncrementalDetokenizer:
    def __init__(self, tokenizer: HFTokenizer, params: SamplingParams, prompt_token_ids: list[int]):
        self.tokenizer = tokenizer
        self.stream = DecodeStream(ids=list(prompt_token_ids[-_CONTEXT_TOKENS:]),
                                   skip_special_tokens=params.skip_special_tokens)
        self.stop = params.stop
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.num_emitted = 0

    def append(self, token_id: int) -> str | None:
        """Add one token; returns the stop string it completed, if any (the text is then cut before it)."""
        piece = self.stream.step(self.tokenizer, token_id)
        if not piece:
            return None
        search_from = max(0, len(self.text) - self.holdback)
        self.text += piece
        matches = [(at, stop) for stop in self.stop if (at := self.text.find(stop, search_from)) != -1]
        if not matches:
            return None
        at, stop = min(matches)
        self.text = self.text[:at]
        return stop

    def skip_emitted(self) -> None:
        """Mark the text so far as sent, less the holdback (what an earlier stream of these tokens sent)."""
        self.num_emitted = max(self.num_emitted, len(self.text) - self.holdback)

    def take_delta(self, finished: bool) -> str:
        """New text since the last call (keeping the stop-string holdback unless finished)."""
        end = len(self.text) if finished else max(self.num_emitted, len(self.text) - self.holdback)
        delta = self.text[self.num_emitted:end]
        self.num_emitted = end
        return delta
