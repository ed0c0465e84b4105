"""Continuing a stream that died mid-answer on another provider, without repeating or losing text.

When a stream dies after the caller has received part of an answer, the router asks the next
provider to continue it: with an assistant *prefill* (the conversation ends with the partial
answer, which the model extends) where the provider accepts one, else with a user message
asking it to continue, starting with the partial answer's last words (the *cue*), which makes
an obedient continuation verifiable.  Models often ignore that request and start again from
the top, or repeat more than they were asked to.  So the fallback's opening is held back and
checked against the partial answer (:class:`Splicer`) before anything of it reaches the caller:

- a continuation that starts with the cue has the cue dropped: verified;
- an exact replay of the partial answer (possibly after a short preamble such as "Sure, here
  it is again:") is dropped, and only what follows it is passed on;
- a continuation that repeats the partial answer's last words has that overlap dropped;
- an opening that reads like the partial answer's own opening (a restart in other words) cannot
  be spliced: :class:`ContinuationMismatch`.  The router then restarts the answer with a
  *restart signal* if the consumer honours one (:func:`accept_restarts`), or tries the next
  provider, or ends with a clean :class:`~langchain_ha.resilience.errors.StreamInterrupted`.

The restart signal is a chunk whose ``response_metadata`` has the key :data:`RESTART_KEY`: the
consumer discards the text it has received so far, and the chunks that follow are the whole
answer.  :func:`assemble` sums chunks the way LangChain does, honouring it; ``lcha serve``
turns it into its own server-sent event.

A verified continuation is passed on as soon as the cue has arrived; anything else is held
back for roughly the length of the partial answer's head (up to 300 characters) plus 40
characters of the fallback's output: the price of never splicing blindly.  A partial answer of
one short word is too little to tell a replay from a continuation: such a cut may end in a
clean error rather than a guess.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import re
from collections.abc import Iterable, Iterator, Sequence

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

CONTINUATION_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped: begin your reply "
    "with its last words, exactly as they are given below, then go straight on. Do not start "
    "again from the beginning."
)
"""How the request a fallback provider gets after a stream died mid-way begins."""

CUE_LABEL = "\n\nLast words: "
"""Between the instruction and the cue in that request."""

_CUE_WORDS = 5
RESTART_KEY = "lcha_restart"
"""``response_metadata`` key of the restart signal: discard the text received so far."""

_HEAD_CHARS = 300  # compare the fallback's opening with at most this much of the partial's head
_LOOKAHEAD_CHARS = 40  # and wait for this many more characters before judging
_ANCHOR_CHARS = 40  # a replay after a preamble is found by the partial's first characters
_MIN_ANCHOR = 4  # shorter partials are too short to find reliably inside other text
_MIN_OVERLAP = 4  # a repeated single word shorter than this may be meant
_OPENING_WORDS = 12
_SIMILAR_RATIO = 0.5
_COVERAGE = 0.5
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from",
    "has", "have", "how", "i", "if", "in", "is", "it", "its", "of", "on", "or", "our", "so",
    "that", "the", "their", "then", "there", "these", "this", "to", "was", "we", "what", "when",
    "where", "which", "who", "will", "with", "you", "your",
})

_ACCEPTS_RESTARTS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lcha_accepts_restarts", default=False
)


class ContinuationMismatch(Exception):
    """The fallback did not continue the partial answer (it restarted in other words).

    ``text`` is everything the fallback has produced so far (its answer from the top).
    """

    def __init__(self, text: str) -> None:
        super().__init__("the fallback's output does not continue the partial answer")
        self.text = text


@contextlib.contextmanager
def accept_restarts() -> Iterator[None]:
    """Declare that whoever consumes streams in this context honours the restart signal.

    Inside it, a stream whose fallback restarted the answer yields a chunk with
    ``response_metadata[RESTART_KEY]`` and then the whole new answer; outside it, the router
    never emits one (it tries another provider or raises ``StreamInterrupted`` instead).
    """
    token = _ACCEPTS_RESTARTS.set(True)
    try:
        yield
    finally:
        _ACCEPTS_RESTARTS.reset(token)


def restarts_accepted() -> bool:
    """True inside :func:`accept_restarts`."""
    return _ACCEPTS_RESTARTS.get()


def is_restart(message: BaseMessage) -> bool:
    """True if ``message`` (a stream chunk) is the restart signal."""
    return RESTART_KEY in message.response_metadata


def assemble(chunks: Iterable[AIMessageChunk]) -> AIMessageChunk | None:
    """Sum stream chunks as LangChain does, except that a restart signal drops what came before."""
    total: AIMessageChunk | None = None
    for chunk in chunks:
        total = chunk if total is None or is_restart(chunk) else total + chunk
    return total


def continuation_messages(
    messages: Sequence[BaseMessage], partial_text: str, *, prefill: bool = False
) -> list[BaseMessage]:
    """The conversation a fallback provider gets to continue ``partial_text`` (a new list).

    With ``prefill`` the conversation ends with the partial answer itself (trailing whitespace
    removed: Anthropic refuses a prefill that ends in whitespace), else with a user message
    asking to continue it.
    """
    if prefill:
        return [*messages, AIMessage(content=partial_text.rstrip())]
    return [*messages, AIMessage(content=partial_text),
            HumanMessage(content=continuation_request(partial_text))]


def continuation_cue(partial_text: str) -> str:
    """The last words of ``partial_text`` that a fallback is asked to begin its reply with."""
    stripped = partial_text.rstrip()
    spaces = [i for i, ch in enumerate(stripped) if ch.isspace()]
    if len(spaces) < _CUE_WORDS:
        return stripped.lstrip()
    return stripped[spaces[-_CUE_WORDS] + 1:]


def continuation_request(partial_text: str) -> str:
    """The user message asking a fallback to continue ``partial_text`` from its cue."""
    return CONTINUATION_INSTRUCTION + CUE_LABEL + continuation_cue(partial_text)


def requested_cue(text: str) -> str | None:
    """The cue if ``text`` is a :func:`continuation_request`, else None (for simulators)."""
    if not text.startswith(CONTINUATION_INSTRUCTION):
        return None
    _, sep, cue = text.partition(CUE_LABEL)
    return cue if sep else ""


class Splicer:
    """Checks a fallback's output against the partial answer the caller already has.

    Feed it the fallback's text as it arrives; it returns the text to pass on (empty while it
    holds back), and raises :class:`ContinuationMismatch` when the output restarts the answer
    in other words.  Once it has decided, everything else passes through unchanged.
    """

    __slots__ = ("_buf", "_cue", "_ends_space", "_head", "_partial", "_passing", "_strip")

    def __init__(self, partial_text: str, *, cue: str | None = None) -> None:
        """``cue``: the last words the fallback was asked to begin with (None: not asked)."""
        self._cue = cue or None
        self._partial = partial_text.rstrip()
        self._ends_space = partial_text[-1:].isspace()
        self._head = self._partial[:_HEAD_CHARS]
        self._buf = ""
        self._passing = False
        self._strip = False  # the partial ends in a space: strip the join's leading whitespace

    @property
    def passing(self) -> bool:
        """True once the fallback's output was accepted (the rest passes unchecked)."""
        return self._passing

    def feed(self, text: str) -> str:
        """The part of ``text`` (and of what was held back) to pass on now."""
        if self._passing:
            return self._join(text)
        self._buf += text
        return self._decide(final=False)

    def end(self) -> str:
        """The fallback's stream ended: decide with what there is; what to pass on last."""
        if self._passing:
            return ""
        return self._decide(final=True)

    def _decide(self, *, final: bool) -> str:
        raw = self._buf
        out = raw.lstrip()
        partial = self._partial
        if not out:
            if final:
                self._passing = True  # nothing more to say: the partial answer was complete
            return ""
        if out.startswith(partial):  # replayed from the top: drop the replay
            return self._pass(out[len(partial):])
        cue = self._cue
        if cue is not None:
            echoed = _after_cue(out, cue)
            if echoed is not None:  # began with the cue as asked: a verified continuation
                return self._pass(echoed)
            if not final and cue.startswith(_unquoted(out)):
                return ""
        if partial.startswith(out):  # so far a replay, or a continuation identical to it
            if final:
                raise ContinuationMismatch(raw)
            return ""
        if len(partial) >= _MIN_ANCHOR:
            found = self._after_anchor(out, final=final)
            if found is not None:
                return found
        if not final and len(out) < len(self._head) + _LOOKAHEAD_CHARS:
            return ""
        overlap = _overlap(partial, out)
        if overlap:  # went on after repeating the partial's last words: drop the repeat
            return self._pass(out[overlap:])
        if _reads_like_opening(self._head, out):
            raise ContinuationMismatch(raw)
        return self._pass(raw)

    def _after_anchor(self, out: str, *, final: bool) -> str | None:
        """A replay after a preamble: the text after it, "" to wait, None if there is none."""
        anchor = self._partial[:_ANCHOR_CHARS]
        at = out.find(anchor)
        while at > 0 and out[at - 1].isalnum():  # inside a word: not a replay
            at = out.find(anchor, at + 1)
        if at < 0:
            return None
        replay = out[at:]
        if replay.startswith(self._partial):
            return self._pass(replay[len(self._partial):])
        if self._partial.startswith(replay) and not final:
            return ""
        raise ContinuationMismatch(self._buf)

    def _pass(self, rest: str) -> str:
        self._passing = True
        self._buf = ""
        self._strip = self._ends_space
        return self._join(rest)

    def _join(self, text: str) -> str:
        if self._strip and text:
            text = text.lstrip()
            self._strip = not text
        return text


_QUOTES = "\"'`\u00ab\u00bb\u2018\u2019\u201c\u201d"


def _unquoted(text: str) -> str:
    return text[1:] if text[:1] in _QUOTES else text


def _after_cue(out: str, cue: str) -> str | None:
    """What follows the cue at the start of ``out`` (quotes around it allowed), or None."""
    text = _unquoted(out)
    if not text.startswith(cue):
        return None
    rest = text[len(cue):]
    if rest[:1] in _QUOTES:
        rest = rest[1:]
    return rest


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _reads_like_opening(head: str, out: str) -> bool:
    """True if ``out`` opens the way the partial answer did (a restart, perhaps reworded)."""
    head_words = _words(head)
    out_words = _words(out[: len(head) + _LOOKAHEAD_CHARS])
    n = min(len(head_words), len(out_words), _OPENING_WORDS)
    if n >= 3:
        ratio = difflib.SequenceMatcher(None, head_words[:n], out_words[:n]).ratio()
        if ratio >= _SIMILAR_RATIO:
            return True
    keys = {_stem(w) for w in head_words if w not in _STOP}
    seen = {_stem(w) for w in out_words}
    coverage = len(keys & seen) / len(keys) if keys else 0.0
    if len(keys) >= 4 and coverage >= _COVERAGE:
        return True
    # Weaker evidence, used when the partial is short or the opening shares some of its words:
    # a partial cut mid-sentence goes on in lower case, a fresh answer opens with a capital.
    return (len(keys) < 6 or coverage >= _COVERAGE / 2) and _fresh_sentence(head, out)


def _fresh_sentence(partial: str, out: str) -> bool:
    """``out`` opens a new sentence although ``partial`` stopped inside one.  A capital is no
    evidence on "I", acronyms, ids, or a word the partial used (a name, a title)."""
    last = partial.rstrip()[-1:]
    if not last or last in ".!?" or not out[:1].isupper():
        return False
    first = out.split(maxsplit=1)[0].strip(".,;:!?\"'()[]")
    if not first or first == "I" or (len(first) > 1 and first.isupper()):
        return False
    if any(ch.isdigit() for ch in first):
        return False
    return _stem(first.lower()) not in {_stem(w) for w in _words(partial)}


def _overlap(partial: str, out: str) -> int:
    """How many characters at the start of ``out`` repeat the partial answer's last words
    (two words or more, or one of ``_MIN_OVERLAP`` letters or more: "the the" may be meant,
    "brown brown" is not)."""
    for k in range(min(len(out), len(partial)), 1, -1):
        if partial.endswith(out[:k]) and _boundary(out, k) and _boundary_before(partial, k):
            repeated = out[:k]
            if len(repeated.strip()) >= _MIN_OVERLAP or len(repeated.split()) >= 2:
                return k
    return 0


def _boundary(text: str, k: int) -> bool:
    return k >= len(text) or not text[k].isalnum()


def _boundary_before(text: str, k: int) -> bool:
    i = len(text) - k - 1
    return i < 0 or not text[i].isalnum()
