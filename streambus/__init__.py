"""streambus: LLM provider streams normalized into one typed event bus, on trio.

Public API is exactly what ``__all__`` lists; every other module member is private.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from streambus.bus import Bus, Policy, SubscriberFailure, Subscription, open_bus
from streambus.client import new_session_id, open_stream, stream
from streambus.conversation import Conversation, converse
from streambus.db import open_db
from streambus.errors import (
    ConfigError,
    LocalProtocolError,
    ProtocolError,
    ProviderError,
    RemoteProtocolError,
    StreambusError,
)
from streambus.events import (
    Channel,
    Delta,
    ErrorKind,
    Event,
    Start,
    Stop,
    StopReason,
    ToolDelta,
    ToolResult,
    Usage,
    decode_event,
    encode_event,
)
from streambus.message import Message, MessageBuilder, ToolCall, assemble
from streambus.normalizers import AnthropicNormalizer, Normalizer, OpenAINormalizer
from streambus.printer import ConsolePrinter, JsonlPrinter
from streambus.providers import ProviderConfig, Request, resolve_provider
from streambus.recorder import Recorder
from streambus.replay import Replayer
from streambus.sse import ServerSentEvent, SSEDecoder
from streambus.timeouts import Timeouts
from streambus.tools import ToolOutcome, ToolRegistry, load_tools

try:
    __version__ = _version("streambus")
except _PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "AnthropicNormalizer",
    "Bus",
    "Channel",
    "ConfigError",
    "ConsolePrinter",
    "Conversation",
    "Delta",
    "ErrorKind",
    "Event",
    "JsonlPrinter",
    "LocalProtocolError",
    "Message",
    "MessageBuilder",
    "Normalizer",
    "OpenAINormalizer",
    "Policy",
    "ProtocolError",
    "ProviderConfig",
    "ProviderError",
    "Recorder",
    "RemoteProtocolError",
    "Replayer",
    "Request",
    "SSEDecoder",
    "ServerSentEvent",
    "Start",
    "Stop",
    "StopReason",
    "StreambusError",
    "SubscriberFailure",
    "Subscription",
    "Timeouts",
    "ToolCall",
    "ToolDelta",
    "ToolOutcome",
    "ToolRegistry",
    "ToolResult",
    "Usage",
    "__version__",
    "assemble",
    "converse",
    "decode_event",
    "encode_event",
    "load_tools",
    "new_session_id",
    "open_bus",
    "open_db",
    "open_stream",
    "resolve_provider",
    "stream",
]
