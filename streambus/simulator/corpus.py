"""The simulator's answers, and how they are cut into tokens.

A new user's first streamed answer comes from here, so entries read like a real assistant's
reply. The language follows the prompt (any Hangul → Korean). The entry whose keywords best
match the prompt wins; with no match one of the general entries is picked from seed + prompt,
so the same request always gets the same answer.

Tokens imitate a real tokenizer's granularity (English word pieces with their leading space,
Korean chunks of one to three syllables) so pacing and usage look realistic. Joining the
tokens always gives the exact text back.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Literal, TypeAlias

import msgspec

__all__ = [
    "CORPUS",
    "Entry",
    "Language",
    "choose_entry",
    "count_tokens",
    "detect_language",
    "keyword_in",
    "reasoning_for",
    "stable_int",
    "tokenize",
]

Language: TypeAlias = Literal["ko", "en"]

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One answer. ``weight`` scales keyword hits: a greeting should lose to the question."""

    key: str
    keywords: tuple[str, ...]
    text: str
    weight: float = 1.0


CORPUS: dict[Language, tuple[Entry, ...]] = {
    "ko": (
        Entry(
            key="streaming",
            keywords=("스트리밍", "스트림", "sse", "stream", "실시간", "이벤트"),
            text=(
                "스트리밍은 모델이 답변 전체를 다 만든 뒤에 한꺼번에 보내는 대신, 만들어지는 "
                "대로 조금씩 나눠 보내는 방식이에요. 그래서 첫 글자가 화면에 뜨기까지 걸리는 "
                "시간이 훨씬 짧아지고, 답을 기다리는 동안에도 내용을 읽기 시작할 수 있어요. "
                "OpenAI와 Anthropic API는 HTTP 응답을 열어 둔 채 Server-Sent Events(SSE) "
                "형식으로 토큰 조각을 하나씩 보내 줍니다. 클라이언트는 이 조각들을 이어 붙여 "
                "전체 답변을 만들고, 마지막 신호가 도착하면 스트림이 끝난 것으로 봐요. 지금 "
                "보고 계신 이 답변도 바로 그렇게 한 조각씩 도착하고 있답니다!"
            ),
        ),
        Entry(
            key="llm",
            keywords=("llm", "언어 모델", "언어모델", "모델", "gpt", "claude", "인공지능", "ai"),
            text=(
                "대규모 언어 모델(LLM)은 방대한 양의 글을 학습해서, 앞에 나온 내용을 보고 "
                "다음에 올 토큰을 예측하도록 훈련된 신경망이에요. 질문을 받으면 가장 그럴듯한 "
                "다음 토큰을 하나 고르고, 그 토큰을 다시 입력에 붙여 또 다음 토큰을 고르는 "
                "과정을 반복해서 답을 완성합니다. 이렇게 한 번에 한 토큰씩 만들어지기 때문에 "
                "스트리밍과 특히 잘 어울려요. 다만 모델은 사실을 검색하는 것이 아니라 배운 "
                "패턴을 이어 가는 것이라서, 중요한 정보는 꼭 한 번 더 확인하는 것이 좋아요."
            ),
        ),
        Entry(
            key="tokens",
            keywords=("토큰", "지연", "속도", "레이턴시", "latency", "ttft", "처리량", "느려"),
            text=(
                "토큰은 모델이 글을 읽고 쓰는 기본 단위예요. 영어에서는 보통 단어 조각 하나, "
                "한국어에서는 음절 한두 개 정도가 한 토큰이 되는 경우가 많습니다. 응답 속도를 "
                "볼 때는 두 가지 숫자가 중요해요. 첫 토큰이 도착하기까지의 시간(TTFT)과, 그 "
                "뒤로 초당 몇 개의 토큰이 나오는지를 나타내는 처리량입니다. TTFT는 네트워크 "
                "왕복과 프롬프트 처리 시간에 좌우되고, 처리량은 모델 크기와 서버 부하에 따라 "
                "달라져요. 스트리밍을 쓰면 전체 시간은 같아도 체감 대기 시간이 크게 줄어듭니다."
            ),
        ),
        Entry(
            key="greeting",
            keywords=("안녕", "반가", "하이", "hello", "hi", "처음"),
            weight=0.5,
            text=(
                "안녕하세요! 만나서 반가워요. 저는 streambus에 들어 있는 시뮬레이터라서, 실제 "
                "모델이나 API 키 없이도 스트리밍 응답이 어떻게 오는지 보여 드릴 수 있어요. "
                "궁금한 것을 물어보시면 한 토큰씩 차근차근 답해 드릴게요. 무엇을 도와드릴까요?"
            ),
        ),
        Entry(
            key="general",
            keywords=(),
            text=(
                "좋은 질문이에요. 저는 streambus의 내장 시뮬레이터라서 진짜 언어 모델처럼 깊이 "
                "생각해서 답하지는 못하지만, 실제 API와 똑같은 형식과 속도로 응답을 스트리밍해 "
                "드릴 수 있어요. 실제 모델의 답을 받아 보려면 OpenAI나 Anthropic의 API 키를 "
                "설정한 뒤 다시 실행해 보세요. 그동안은 이 답변이 한 조각씩 도착하는 모습을 "
                "구경하셔도 좋아요."
            ),
        ),
        Entry(
            key="general-2",
            keywords=(),
            text=(
                "흥미로운 주제네요! 이 답변은 미리 준비된 문장을 토큰 단위로 잘라서, 실제 "
                "모델과 같은 속도와 형식으로 보내 주는 시뮬레이터가 만든 것이에요. 덕분에 "
                "네트워크 연결, SSE 해석, 이벤트 정규화까지 전체 경로를 API 키 없이 시험해 볼 "
                "수 있습니다. 진짜 답이 필요하시다면 실제 제공자를 설정해 주세요."
            ),
        ),
    ),
    "en": (
        Entry(
            key="streaming",
            keywords=("stream", "sse", "server-sent", "real time", "realtime", "chunk"),
            text=(
                "Streaming means the model sends its answer piece by piece as it is generated, "
                "instead of waiting until the whole reply is finished. The first words reach "
                "your screen much sooner, and you can start reading while the rest is still "
                "being written. OpenAI and Anthropic keep the HTTP response open and send small "
                "fragments as Server-Sent Events. The client glues the fragments back together "
                "and treats a final marker as the end of the stream. The answer you are reading "
                "right now is arriving exactly that way, one token at a time!"
            ),
        ),
        Entry(
            key="llm",
            keywords=("llm", "language model", "model", "gpt", "claude", "neural", "ai"),
            text=(
                "A large language model (LLM) is a neural network trained on a huge amount of "
                "text to predict the next token given everything that came before. To answer "
                "you, it picks a likely next token, appends it to the input, and repeats until "
                "the reply is complete. Because the text is produced one token at a time, it "
                "fits streaming naturally. Keep in mind that the model continues patterns rather "
                "than looking facts up, so it is worth double-checking anything important."
            ),
        ),
        Entry(
            key="tokens",
            keywords=("token", "latency", "ttft", "throughput", "speed", "slow", "fast"),
            text=(
                "A token is the unit a model reads and writes: in English it is often a word or "
                "a piece of a longer word, roughly four characters on average. Two numbers "
                "describe how fast a reply feels. Time to first token (TTFT) is how long you "
                "wait before anything appears, and throughput is how many tokens per second "
                "follow. TTFT depends on the network round trip and on processing the prompt, "
                "while throughput depends on the model size and the server load. Streaming does "
                "not make the total faster, but it makes the wait feel much shorter."
            ),
        ),
        Entry(
            key="greeting",
            keywords=("hello", "hi", "hey", "good morning", "greetings", "nice to meet"),
            weight=0.5,
            text=(
                "Hello! Nice to meet you. I am the simulator built into streambus, so I can show "
                "you what a streamed answer looks like without a real model or an API key. Ask "
                "me anything and I will reply one token at a time. What would you like to know?"
            ),
        ),
        Entry(
            key="general",
            keywords=(),
            text=(
                "That is a good question. I am the simulator built into streambus, so I cannot "
                "think about it the way a real language model would, but I can stream a reply "
                "with the same format and pacing as the real APIs. To get a real answer, set an "
                "OpenAI or Anthropic API key and run the command again. Until then, enjoy "
                "watching this reply arrive piece by piece."
            ),
        ),
        Entry(
            key="general-2",
            keywords=(),
            text=(
                "Interesting topic! This reply was written in advance and cut into tokens by "
                "the streambus simulator, which sends them at a realistic pace in exactly the "
                "format real providers use. That lets you exercise the whole path, from the "
                "network connection through SSE decoding to event normalization, without an API "
                "key. For a real answer, configure a real provider."
            ),
        ),
    ),
}

_REASONING: dict[Language, str] = {
    "ko": (
        "사용자가 “{prompt}”라고 물었다. 핵심 개념을 쉬운 말로 먼저 설명하고, 실제로 "
        "어떻게 동작하는지 예를 하나 들어 주면 좋겠다. 너무 길지 않게 다섯 문장 안팎으로 "
        "정리하자."
    ),
    "en": (
        "The user asked: “{prompt}”. I should explain the core idea in plain words first, then "
        "give one concrete example of how it works in practice. Keep it to about five sentences."
    ),
}


def detect_language(text: str) -> Language:
    """Korean if the text has any Hangul, else English."""
    return "ko" if _HANGUL.search(text) else "en"


def stable_int(*parts: object) -> int:
    """A 64-bit integer from ``parts`` that is the same in every process (``hash`` is not)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def keyword_in(keyword: str, text: str) -> bool:
    """``keyword`` occurs in lowercase ``text`` at the start of a word.

    Prefix matching suits Korean, whose particles attach at the end ("스트리밍이" has
    "스트리밍"), and English inflection ("streaming"); short ASCII keywords ("ai", "hi") must
    be whole words.
    """
    end = r"(?!\w)" if keyword.isascii() and len(keyword) <= 3 else ""
    return re.search(rf"(?<!\w){re.escape(keyword)}{end}", text) is not None


def _score(entry: Entry, prompt: str) -> float:
    lowered = prompt.lower()
    return entry.weight * sum(1 for keyword in entry.keywords if keyword_in(keyword, lowered))


def choose_entry(prompt: str, seed: int = 0, language: Language | None = None) -> Entry:
    """The best keyword match for ``prompt``; with none, a general entry from seed + prompt."""
    entries = CORPUS[language or detect_language(prompt)]
    best = max(entries, key=lambda entry: _score(entry, prompt))
    if _score(best, prompt) > 0:
        return best
    general = [entry for entry in entries if not entry.keywords]
    return general[stable_int(seed, prompt) % len(general)]


def reasoning_for(prompt: str, language: Language) -> str:
    """A short plausible chain of thought about ``prompt``, for reasoning channels."""
    short = " ".join(prompt.split())
    if len(short) > 80:
        short = short[:77] + "..."
    return _REASONING[language].format(prompt=short)


# A GPT-2-like pre-split: contractions, runs of letters / Hangul / digits with one optional
# leading space, punctuation runs, whitespace.
_PRESPLIT = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)\b"
    r"| ?[\uac00-\ud7a3]+"
    r"| ?[^\W\d_\uac00-\ud7a3]+"
    r"| ?\d{1,3}"
    r"| ?[^\s\w]+"
    r"|\s+(?!\S)|\s+"
    r"|[\s\S]",
)


def _split_word(word: str, rng: random.Random, lengths: tuple[int, int]) -> list[str]:
    """Cut a long run into pieces; the first piece keeps the leading space."""
    pieces: list[str] = []
    start = 0
    while start < len(word):
        size = rng.randint(*lengths)
        if start == 0 and word.startswith(" "):
            size += 1
        if lengths[0] > 1 and len(word) - (start + size) == 1:
            size += 1  # no one-letter English stragglers
        pieces.append(word[start : start + size])
        start += size
    return pieces


def tokenize(text: str) -> list[str]:
    """Cut ``text`` into token-sized pieces; ``"".join(tokenize(t)) == t`` always holds.

    English words up to nine letters stay whole (with their leading space) and longer ones
    become pieces of three to five letters; Hangul runs become chunks of one to three
    syllables. The cuts depend only on the text.
    """
    rng = random.Random(stable_int("tokenize", text))
    tokens: list[str] = []
    for match in _PRESPLIT.finditer(text):
        piece = match.group()
        core = piece.lstrip(" ")
        if core and _HANGUL.match(core):
            tokens.extend(_split_word(piece, rng, (1, 3)))
        elif core.isalpha() and len(core) > 9:
            tokens.extend(_split_word(piece, rng, (3, 5)))
        else:
            tokens.append(piece)
    return tokens


def count_tokens(text: str) -> int:
    """How many tokens ``text`` would be, for usage figures."""
    return len(tokenize(text))
