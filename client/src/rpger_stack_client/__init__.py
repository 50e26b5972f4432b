"""rpger-stack-client: the RPGer backend's clients for the rpger-dbstack databases.

    from rpger_stack_client import StackClients, api_health
    clients = StackClients.from_env()     # MONGODB_URI, REDIS_URL, CHROMA_HOST, ... (+ *_FILE)
    clients.health()                      # {"mongo": {"ok": True, ...}, "redis": {...}, "chroma": {...}}

Python >= 3.9; depends only on pymongo, redis, chromadb-client and tenacity.
"""

from rpger_stack_client.clients import StackClients
from rpger_stack_client.config import ClientConfig, ConfigError, redact_url
from rpger_stack_client.health import api_health, check_all
from rpger_stack_client.retry import RetryPolicy, RetryStats, is_transient, transient_errors

__version__ = "0.1.0"

__all__ = [
    "ClientConfig",
    "ConfigError",
    "RetryPolicy",
    "RetryStats",
    "StackClients",
    "api_health",
    "check_all",
    "is_transient",
    "redact_url",
    "transient_errors",
]
