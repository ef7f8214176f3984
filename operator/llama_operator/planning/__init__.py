"""Pure placement: inventory snapshot + queue -> decisions; the cost model; the simulator."""

from llama_operator.planning.decision import Candidate, Decision, Outcome
from llama_operator.planning.engine import RANKINGS, Planner, Ranking, order, plan
from llama_operator.planning.estimate import Option, Stage, options
from llama_operator.planning.inventory import Inventory, JobRequest, NodeState, PoolState
from llama_operator.planning.llama import LlamaShape, parameter_count, shape_of
from llama_operator.planning.pools import PoolError, PoolType, resolve_pool
from llama_operator.planning.workload import Workload, workload_of

__all__ = [
    "RANKINGS",
    "Candidate",
    "Decision",
    "Inventory",
    "JobRequest",
    "LlamaShape",
    "NodeState",
    "Option",
    "Outcome",
    "Planner",
    "PoolError",
    "PoolState",
    "PoolType",
    "Ranking",
    "Stage",
    "Workload",
    "options",
    "order",
    "parameter_count",
    "plan",
    "resolve_pool",
    "shape_of",
    "workload_of",
]
