"""IG (REST trading API + Lightstreamer): the broker port (``IgBroker``) and its parts.

See ``execution`` for how the engine's bracket legs map onto IG's position levels and what
the engine would need to change; ``parsing`` for the pure wire mappings; ``http`` for the
session; ``stream`` for the Lightstreamer SDK.
"""

from adapters.brokers.ig.execution import IgBroker, ig_credentials
from adapters.brokers.ig.http import IgCredentials, IgRestClient
from adapters.brokers.ig.parsing import IgAuthRefused

__all__ = ["IgAuthRefused", "IgBroker", "IgCredentials", "IgRestClient", "ig_credentials"]
