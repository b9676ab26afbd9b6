"""A faithful local simulator of the OpenAI Files + Batches API (stdlib only).

Used by the test suite (over real HTTP on loopback), by benchmarks, and by the dashboard's demo
mode. It speaks the ``/v1`` API of docs/batch-api.md (or, with ``dialect="azure"`` /
``"azure-legacy"``, Azure OpenAI's v1 or dated API; see simulator/dialects.py) and adds a
``/_sim`` control API to move its clock, inject faults, set limits and force outcomes; see
simulator/README.md. ``Simulator(history_days=30)`` starts with a month of a small team's
batches ending now, for the dashboard's demo (see simulator/history.py).

Conventions a test or a demo input file can rely on:

- A request whose ``custom_id`` contains ``fail`` fails: its line goes to the error file with
  ``response.status_code`` 400 (an ``invalid_request_error`` body), or 500 (a
  ``server_error`` body) when the custom_id also contains ``500``.
- A batch created with ``metadata: {"sim_expire": "true"}`` ends ``expired`` halfway through
  ``in_progress``: finished requests are in the output/error files, the others in the error
  file with ``error.code`` ``batch_expired``.
- A batch is a pure function of the simulated clock: ``validating`` (2 s) → ``in_progress``
  (1 s a request, counts rising linearly) → ``finalizing`` (2 s) → ``completed``; all
  durations are divided by ``speed``. Requests run in a seeded shuffled order, which is also
  the order of the result files' lines.
"""

from simulator.app import SimulatorApp
from simulator.engine import Simulator
from simulator.faults import Faults, Quirks
from simulator.lifecycle import Timing
from simulator.server import SimulatorServer

__all__ = ["Faults", "Quirks", "Simulator", "SimulatorApp", "SimulatorServer", "Timing"]
