"""The real device client: the platform's app-agnostic half that runs on a phone.

A :class:`DeviceClient` keeps its private log and state in a local SQLite
:class:`DeviceStore`, syncs model versions, decides eligibility on its own clock, trains
when idle and runs the secure round over HTTP through one small transport module
(:class:`HttpTransport`). :func:`run_population` runs many clients against a server (the
CLI's ``device run`` command, tests and the device benchmark).
"""

from federated._device_client import (
    DeviceClient,
    DeviceConditions,
    DeviceStore,
    LocalStore,
    RoundParticipation,
)
from federated._device_population import PopulationRound, run_population
from federated._transport import HttpResponse, HttpTransport, TransportError

__all__ = [
    "DeviceClient",
    "DeviceConditions",
    "DeviceStore",
    "HttpResponse",
    "HttpTransport",
    "LocalStore",
    "PopulationRound",
    "RoundParticipation",
    "TransportError",
    "run_population",
]
