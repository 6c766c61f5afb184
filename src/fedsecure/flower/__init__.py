"""fedsecure as a drop-in for people's own Flower apps (``pip install 'fedsecure[flower]'``).

Where a Flower app uses Flower's SecAgg+ (``secaggplus_mod`` on the client, ``SecAggPlusWorkflow`` on the
server), it uses these instead:

- :func:`secure_aggregation_mod`: ``ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod])``;
- :class:`SecureAggregationWorkflow`: ``DefaultWorkflow(fit_workflow=SecureAggregationWorkflow(...))``.

Flower's Message-API strategies (``flwr.serverapp.strategy``), for which Flower has no secure aggregation, run
their rounds over :class:`SecureGrid`: ``strategy.start(grid=SecureGrid(grid, ...), ...)``, with the same mod on
the clients.

The user's ``NumPyClient``/``Client`` and strategy are unchanged. See the README's "Flower" section.
"""

from ._grid import SecureGrid
from ._mod import secure_aggregation_mod
from ._workflow import RoundSummary, SecureAggregationWorkflow

__all__ = ["secure_aggregation_mod", "SecureAggregationWorkflow", "SecureGrid", "RoundSummary"]
