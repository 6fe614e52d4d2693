"""Provider normalizers: pure state machines from decoded SSE events to streambus events."""

from streambus.normalizers._base import Normalizer, normalize_stop_reason
from streambus.normalizers.anthropic import AnthropicNormalizer
from streambus.normalizers.openai import OpenAINormalizer

__all__ = ["AnthropicNormalizer", "Normalizer", "OpenAINormalizer", "normalize_stop_reason"]
